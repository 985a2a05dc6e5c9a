"""Streaming one client: replay what it missed, then live events; or refuse it politely."""

from __future__ import annotations

import re

import orjson
from aiohttp import web

from .broker import BrokerUnavailable
from .history import Replay, Start
from .replies import error
from .sse import encode_comment, encode_event, encode_retry, jittered_retry
from .state import BROKER, HUB, METRICS, OUTBOX, SETTINGS
from .stream import Stream

MAX_TAIL = 10_000
_TAIL = re.compile(r"[0-9]{1,5}")
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


def requested_start(request: web.Request) -> Start | None:
    """Where the client asks its stream to begin: after its Last-Event-ID (the header,
    then `lastEventId`; `earliest` for all that is retained), else at the newest `tail`
    messages; None for live only. Raises ValueError for a bad `tail`.

    A browser reconnects with the same URL and a Last-Event-ID header, so the header
    wins over `tail` and over `lastEventId=earliest`: it resumes where it stopped.
    """
    tail = request.query.get("tail")
    if tail is not None and not (_TAIL.fullmatch(tail) and int(tail) <= MAX_TAIL):
        raise ValueError(f"tail must be a whole number from 0 to {MAX_TAIL}")
    after = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    if after:
        return Start.resume(after)
    return None if tail is None else Start(tail=int(tail))


async def serve_stream(
    request: web.Request, channels: list[str], start: Start | None
) -> web.StreamResponse:
    """Subscribe, replay what `start` asks for, then stream live events until the end."""
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
    try:
        # Subscribed before the history read and the headers: nothing falls in between.
        await hub.join(stream)
        preamble = [encode_retry(settings.retry_ms)]
        if "hello" in request.query:
            # Opt-in: tell the page which node serves it (no id: Last-Event-ID is untouched).
            hello = orjson.dumps({"node": settings.node_id}).decode()
            preamble.append(encode_event(hello, "hello"))
        replayed = None
        if start is not None:
            try:
                replayed = await request.app[BROKER].replay(channels, start)
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
