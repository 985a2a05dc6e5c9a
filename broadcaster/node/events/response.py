"""The event-stream response: handshake, preamble, then the connection handed to the stream."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import orjson
from aiohttp import web

from broadcaster.brokers.protocol import BrokerUnavailable
from broadcaster.core.history import Start
from broadcaster.core.identity import Identity
from broadcaster.core.metrics import Counts
from broadcaster.core.replay import Replay
from broadcaster.core.sse import encode_event, encode_retry
from broadcaster.delivery.across import ComposedReplay, replay_across
from broadcaster.delivery.stream import Stream
from broadcaster.node.aiohttp_internals import OneWriteResponse, detach
from broadcaster.node.state import BROKER, HUB, METRICS, SETTINGS

log = logging.getLogger(__name__)

REPLAY_PIECE = 1 << 16  # bytes of a replay written at a time
STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class EventStreamResponse(OneWriteResponse):
    """One client's SSE response.

    `serve` subscribes first, then sends the headers and a preamble (`retry:`, the opt-in
    `hello`, the replay `start` asks for), and hands the connection to the stream: live
    frames are written to the transport directly, and the stream ends the body.
    """

    # (The headers wait for the preamble, which always follows at once: one write.)

    def __init__(self) -> None:
        super().__init__(headers=STREAM_HEADERS)
        self._handed_off = False

    async def serve(
        self,
        request: web.Request,
        channels: Sequence[str],
        start: Start | None,
        *,
        release: Callable[[], None],
        token_expires: float = math.inf,
        identity: Identity | None = None,
    ) -> None:
        """Start streaming `channels` to the client (who is `identity`, None when
        anonymous); `release` is called once it ends, and the stream ends at
        `token_expires` (seconds since the epoch), as at its max age.

        Returns when the stream is live (it goes on without this handler), or has ended.
        """
        app = request.app
        transport = request.transport
        hub = app[HUB]
        if transport is None:
            release()
            raise web.HTTPBadRequest(text="connection closed\n")
        stream = hub.open(
            transport,
            channels,
            max_pending_bytes=app[SETTINGS].max_pending_bytes,
            release=release,
            token_expires=token_expires,
            identity=identity,
        )
        try:
            # Subscribed before the history read and the headers: nothing falls in between.
            await hub.join(stream)
            opening = self._opening(request)
            replayed: Replay | ComposedReplay | None
            if stream.composite is not None:
                # (Live only too: the stream needs its position in every group.)
                groups = stream.composite.groups
                replayed = await replay_across(app[BROKER], groups, start or Start(tail=0))
            else:
                replayed = await self._replay(request, channels, start)
            if (
                hub.finished(stream)
                and _nothing_in(replayed)
                and not stream.holds_after(replayed.head if isinstance(replayed, Replay) else None)
            ):
                await self._no_content(request, stream)
                return
            await self.prepare(request)
            await self._send(opening, replayed, app[METRICS].counts)
            if not stream.ended:  # (the node may have begun to shut down meanwhile)
                self.force_close()
                detach(request, stream)  # the stream owns the connection now
                self._handed_off = True
                chunked = self.headers.get("Transfer-Encoding") == "chunked"
                if isinstance(replayed, ComposedReplay):
                    hub.go_live(stream, chunked=chunked, positions=replayed.positions)
                else:
                    hub.go_live(
                        stream,
                        chunked=chunked,
                        replayed_through=replayed.head if replayed else None,
                        caught_up=replayed.caught_up if replayed else True,
                    )
        except ConnectionResetError:
            transport.abort()
        except BrokerUnavailable as exc:
            # The rest of the replay is out of reach: the client comes back with the id of
            # the last message it got, and resumes from there.
            log.warning("a replay was cut short, its client will resume: %s", exc)
            stream.close("unavailable")
            transport.abort()
        finally:
            if not self._handed_off:
                # The stream never had the connection to itself (or its handler was
                # cancelled): it ends here, and lets go of its slot and the hub.
                stream.connection_lost()

    async def _no_content(self, request: web.Request, stream: Stream) -> None:
        """Every channel is closed and the client has all: 204 tells an EventSource to
        stop reconnecting."""
        stream.close("closed")
        request.app[METRICS].counts.no_content += 1
        self.set_status(204)
        for name in STREAM_HEADERS:
            self.headers.pop(name, None)
        await self.prepare(request)

    async def write_eof(self, data: bytes = b"") -> None:
        """End the body, unless the stream owns the connection (it ends the body itself)."""
        if not self._handed_off:
            await super().write_eof(data)

    async def _send(
        self, opening: bytes, replayed: Replay | ComposedReplay | None, counts: Counts
    ) -> None:
        """The opening lines, then the replay: in one write when it is small (as most
        are: a reconnect storm is thousands at once), else in pieces, each written when
        the client has read most of the one before. Pieces are views of bytes shared by
        every client of the replay (its first page), or of the page just read for this
        client: a slow reader holds the node to one page, never to its whole replay."""
        if replayed is None:
            await self.write(opening)
            return
        pending = opening
        async for frames, events in replayed.pieces():
            if len(pending) + len(frames) <= REPLAY_PIECE:
                pending += frames
            else:
                await self._write_pieces(pending, frames)
                pending = b""
            counts.events_replayed += events
        if pending:
            await self.write(pending)

    async def _write_pieces(self, pending: bytes, frames: bytes) -> None:
        view = memoryview(frames)
        await self.write(pending + view[:REPLAY_PIECE])
        for offset in range(REPLAY_PIECE, len(view), REPLAY_PIECE):
            await self.write(view[offset : offset + REPLAY_PIECE])  # waits for the client

    def _opening(self, request: web.Request) -> bytes:
        """`retry:` and the opt-in `hello`."""
        settings = request.app[SETTINGS]
        parts = [encode_retry(settings.retry_ms)]
        if "hello" in request.query:
            # Tells the page which node serves it (no id: Last-Event-ID is untouched).
            parts.append(encode_event(orjson.dumps({"node": settings.node_id}).decode(), "hello"))
        return b"".join(parts)

    async def _replay(
        self, request: web.Request, channels: Sequence[str], start: Start | None
    ) -> Replay | None:
        """The replay (with its resets) `start` asks for, of channels of one group."""
        if start is None:
            return None
        try:
            return await request.app[BROKER].replay(channels, start)
        except BrokerUnavailable:
            # History is out of reach: the client still gets live events, and learns that
            # it may have missed some.
            return Replay(None, resets={"unavailable": list(channels)})


def _nothing_in(replayed: Replay | ComposedReplay | None) -> bool:
    """Whether a replay sends nothing at all: no event, no reset, no position."""
    if replayed is None:
        return True
    if isinstance(replayed, ComposedReplay):
        return not replayed.body
    return not (replayed.items or replayed.resets or replayed.notices or replayed.more)
