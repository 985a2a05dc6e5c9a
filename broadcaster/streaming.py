"""Streaming one client: replay what it missed, then live events; or refuse it politely."""

from __future__ import annotations

import orjson
from aiohttp import web

from .broker import BrokerUnavailable
from .history import Replay
from .replies import error
from .sse import encode_comment, encode_event, encode_retry, jittered_retry
from .state import BROKER, HUB, METRICS, OUTBOX, SETTINGS
from .stream import Stream

STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


async def overloaded(request: web.Request, reason: str) -> web.StreamResponse:
    """Refuse a subscriber: 503 or 429 for load balancers, or 200 and a later retry.

    A browser's EventSource gives up for good on any status but 200, so the `retry`
    mode answers 200 with a jittered `retry:` and closes: the browser comes back later.
    """
    settings = request.app[SETTINGS]
    delay_ms = jittered_retry(settings.retry_ms)
    if settings.overload_response == "retry":
        response = web.StreamResponse(headers=STREAM_HEADERS)
        await response.prepare(request)
        await response.write_eof(encode_retry(delay_ms) + encode_comment(f" {reason}"))
        return response
    retry_after = {"Retry-After": str(max(1, round(delay_ms / 1000)))}
    if reason == "ip_cap":
        return error(429, "too many connections from this address", **retry_after)
    return error(503, "node is at its connection cap", **retry_after)


async def serve_stream(request: web.Request, channels: list[str]) -> web.StreamResponse:
    """Subscribe, replay what the client missed, then stream live events until the end."""
    settings = request.app[SETTINGS]
    transport = request.transport
    if transport is None:
        raise web.HTTPBadRequest(text="connection closed\n")
    hub = request.app[HUB]
    stream = Stream(
        transport,
        request.app[OUTBOX],
        channels,
        max_pending_bytes=settings.max_pending_bytes,
        expires_at=hub.expiry(),
    )
    response = web.StreamResponse(headers=STREAM_HEADERS)
    after = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    try:
        # Subscribed before the history read and the headers: nothing falls in between.
        await hub.join(stream)
        preamble = [encode_retry(settings.retry_ms)]
        if "hello" in request.query:
            # Opt-in: tell the page which node serves it (no id: Last-Event-ID is untouched).
            hello = orjson.dumps({"node": settings.node_id}).decode()
            preamble.append(encode_event(hello, "hello"))
        replayed = None
        if after:
            try:
                replayed = await request.app[BROKER].replay(channels, after)
            except BrokerUnavailable:
                # History is out of reach: the client still gets live events, and learns
                # that it may have missed some.
                replayed = Replay(None, resets={"unavailable": channels})
            preamble.append(replayed.frames())
            request.app[METRICS].counts.events_replayed += len(replayed.messages)
        await response.prepare(request)
        await response.write(b"".join(preamble))
        stream.start(
            chunked=response.headers.get("Transfer-Encoding") == "chunked",
            replayed_through=replayed.head if replayed else None,
        )
        reason = await stream.closed
    except ConnectionResetError:
        reason = "gone"
    finally:
        hub.leave(stream)
    if reason in ("slow", "gone") or transport.is_closing():
        # Nothing more can or should reach this client; drop what it has not read.
        transport.abort()
    else:
        response.force_close()
        await response.write_eof()
    return response
