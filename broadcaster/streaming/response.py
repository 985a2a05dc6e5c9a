"""The event-stream response: handshake, preamble, then the socket handed to the hub."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from aiohttp import web

from ..broker import BrokerUnavailable
from ..history import Replay, Start
from ..sse import encode_event, encode_retry
from ..state import BROKER, HUB, METRICS, SETTINGS
from .stream import Stream

STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class EventStreamResponse(web.StreamResponse):
    """One client's SSE response.

    `serve` subscribes first, then sends the headers and a preamble (`retry:`, the opt-in
    `hello`, the replay `start` asks for), and hands the socket to the hub: live frames are
    written to the transport directly, not through this object, until the stream ends.
    """

    def __init__(self) -> None:
        super().__init__(headers=STREAM_HEADERS)

    async def serve(
        self, request: web.Request, channels: Sequence[str], start: Start | None
    ) -> None:
        """Stream `channels` to the client until the stream ends, for whatever reason."""
        app = request.app
        transport = request.transport
        if transport is None:
            raise web.HTTPBadRequest(text="connection closed\n")
        hub = app[HUB]
        stream = Stream(
            transport,
            hub.outbox,
            channels,
            max_pending_bytes=app[SETTINGS].max_pending_bytes,
            expires_at=hub.expiry(),
        )
        try:
            # Subscribed before the history read and the headers: nothing falls in between.
            await hub.join(stream)
            preamble, replayed = await self._preamble(request, channels, start)
            await self.prepare(request)
            await self.write(preamble)
            hub.go_live(
                stream,
                chunked=self.headers.get("Transfer-Encoding") == "chunked",
                replayed_through=replayed.head if replayed else None,
            )
            # This frame lives as long as the stream: it keeps nothing it no longer needs
            # (a replay's bytes are kilobytes per client). And a stream's connection is
            # never reused: aiohttp's keep-alive timer goes now, not when it first fires.
            del preamble, replayed
            request.protocol.keep_alive(False)
            reason = await stream.closed
        except ConnectionResetError:
            reason = "gone"
        finally:
            stream.close("gone")  # if it has not ended: its handler was cancelled
            hub.leave(stream)
        if reason in ("slow", "gone") or transport.is_closing():
            # Nothing more can or should reach this client; drop what it has not read.
            transport.abort()
        else:
            self.force_close()
            await self.write_eof()

    async def _preamble(
        self, request: web.Request, channels: Sequence[str], start: Start | None
    ) -> tuple[bytes, Replay | None]:
        """`retry:`, the opt-in `hello`, and the replay (with its resets) `start` asks for."""
        app = request.app
        settings = app[SETTINGS]
        parts = [encode_retry(settings.retry_ms)]
        if "hello" in request.query:
            # Tells the page which node serves it (no id: Last-Event-ID is untouched).
            parts.append(encode_event(orjson.dumps({"node": settings.node_id}).decode(), "hello"))
        if start is None:
            return b"".join(parts), None
        try:
            replayed = await app[BROKER].replay(channels, start)
        except BrokerUnavailable:
            # History is out of reach: the client still gets live events, and learns that
            # it may have missed some.
            replayed = Replay(None, resets={"unavailable": list(channels)})
        parts.append(replayed.frames())
        app[METRICS].counts.events_replayed += len(replayed.items)
        return b"".join(parts), replayed
