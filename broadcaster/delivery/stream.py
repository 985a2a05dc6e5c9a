"""One client's event stream: its own queued frames, and writes straight to its socket."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Literal

from broadcaster.core.identity import Identity
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.positions import Positions
from broadcaster.core.sse import HEARTBEAT
from broadcaster.delivery.composite import Composite
from broadcaster.delivery.outbox import LAST_CHUNK, Outbox, http_chunk

DisconnectReason = Literal[
    "shutdown", "max_age", "token_expired", "slow", "gone", "unavailable", "closed"
]
"""Why a stream ended: the node is stopping, the stream reached its age or its token's,
its client could not keep up or went away, the rest of its replay was out of reach, or
every channel it follows was closed by its publisher (after the closing message)."""
# How long a stream that ended cleanly waits for its client to read its last bytes.
CLOSE_LINGER = 10.0


def _nothing(stream: Stream) -> None:
    """What a stream nobody else holds lets go of when it ends: nothing."""


class Stream(asyncio.Protocol):
    """An open SSE response, written to its transport directly once live.

    Frames pushed before `start` wait, so a stream can subscribe before its headers go out
    and before its replay is read; `start` then drops the ones the replay already holds.
    Live, it takes its own frames through `push` (written at the end of the turn), or
    bytes shared with other streams through `send`.

    The stream owns its whole life. Live, it is its connection's protocol. `close(reason)`
    is the one way to end it: the response body ends and the connection closes. Once the
    connection is gone (`connection_lost`), the stream lets go, exactly once, of what it
    held: `on_end` leaves the hub and frees the connection slot.
    """

    __slots__ = (
        "_max_pending",
        "_newest",
        "_on_end",
        "_outbox",
        "_pending",
        "_pending_events",
        "_pending_ids",
        "_started",
        "_transport",
        "_waiting",
        "channels",
        "chunked",
        "composite",
        "expires_at",
        "expiry",
        "identity",
        "last_write",
        "reason",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        outbox: Outbox,
        channels: Sequence[str],
        *,
        max_pending_bytes: int,
        expires_at: float = math.inf,
        token_expires_at: float = math.inf,
        on_end: Callable[[Stream], None] = _nothing,
        composite: Composite | None = None,
        identity: Identity | None = None,
    ) -> None:
        loop = outbox.loop
        self.channels = tuple(channels)
        self.identity = identity
        """Who the subscriber is (its token's `sub`), for presence; None when anonymous."""
        self.composite = composite
        """The stream's ids, when its channels span several groups (else None)."""
        self.expires_at = min(expires_at, token_expires_at)
        """When it ends (loop time): its max age, or its token's `exp`, whichever is first."""
        self.expiry: DisconnectReason = (
            "token_expired" if token_expires_at < expires_at else "max_age"
        )
        self.reason: DisconnectReason | None = None
        """Why the stream ended, once it has."""
        self.chunked = False
        self.last_write = loop.time()
        self._transport = transport
        self._outbox = outbox
        self._on_end: Callable[[Stream], None] | None = on_end  # None once called
        self._max_pending = max_pending_bytes
        self._pending: list[bytes] = []
        self._pending_ids: list[EventId | None] | None = []  # only until start
        self._waiting = 0  # bytes queued until start, while the preamble goes out
        self._pending_events = 0
        self._started = False
        self._newest: EventId | None = None  # the newest id the stream has (or replayed)

    @property
    def ended(self) -> bool:
        """Whether the stream has ended (its `reason` says why)."""
        return self.reason is not None

    @property
    def live(self) -> bool:
        """Whether the stream writes to its client now (started, and not ended)."""
        return self._started and self.reason is None

    def holds_after(self, position: EventId | None) -> bool:
        """Whether a message newer than `position` waits for the stream to start (a
        message of several groups' stream, whatever its id)."""
        if self.composite is not None and self.composite.holding:
            return True
        ids = self._pending_ids or ()
        return any(id_ is not None and (position is None or id_ > position) for id_ in ids)

    def start(self, *, chunked: bool, replayed_through: EventId | None = None) -> None:
        """Headers (and any replay) are out: from now on frames go straight to the transport.

        Frames that waited and are not newer than `replayed_through` are dropped, and so
        are later ones (a replay that was not caught up with live delivery sees them
        again: see `push`).
        """
        if replayed_through is not None:
            if self._pending_ids is not None:
                kept = [
                    frame
                    for frame, id_ in zip(self._pending, self._pending_ids, strict=True)
                    if id_ is None or id_ > replayed_through
                ]
                self._pending_events -= len(self._pending) - len(kept)
                self._pending = kept
            if self._newest is None or replayed_through > self._newest:
                self._newest = replayed_through
        self._pending_ids = None
        self.chunked = chunked
        self._started = True
        self.last_write = self._outbox.loop.time()
        if self._pending:
            self._outbox.mark(self)

    def compose(self, channel: str, message: Message) -> None:
        """Queue `message` with the stream's composite id (a stream of several groups)."""
        composite = self.composite
        if composite is None:
            raise TypeError("not a stream of several groups")
        if composite.positions is None:
            composite.hold(channel, message)  # (until its replay tells where it stands)
            self._waiting += len(message.frame())
            if self._waiting + self._transport.get_write_buffer_size() > self._max_pending:
                self.close("slow")
            return
        frame = composite.frame(channel, message)
        if frame is not None:
            self.push(frame)

    def begin(self, positions: Positions) -> None:
        """A stream of several groups starts at `positions` (its replay is out)."""
        if self.composite is not None:
            for frame in self.composite.begin(positions):
                self.push(frame)

    def beat(self) -> None:
        """Queue a heartbeat (not counted as an event)."""
        self.push(HEARTBEAT, event=False)

    def push(self, frame: bytes, id_: EventId | None = None, *, event: bool = True) -> None:
        """Queue `frame` (of message `id_`); it is written at the end of this loop turn."""
        if self.reason is not None:
            return
        if id_ is not None:
            # Ids on a stream only grow. One that does not was in the stream's replay, or
            # predates the subscription of its channel (a first subscription starts where
            # the node's knowledge does, which may be older: see `Sequencer.started`).
            newest = self._newest
            if newest is not None and id_ <= newest:
                return
            self._newest = id_
        self._pending_events += event
        if self._started:
            if not self._pending:
                self._outbox.mark(self)
        elif self._pending_ids is not None:
            # A client slow to read its replay is as slow as a live one: what waits for it
            # (its queued frames and its socket's unsent bytes) is bounded the same way.
            self._waiting += len(frame)
            if self._waiting + self._transport.get_write_buffer_size() > self._max_pending:
                self.close("slow")
                return
            self._pending_ids.append(id_)
        self._pending.append(frame)

    def flush(self) -> None:
        """Write every queued frame in one write; cut the client off if it cannot keep up."""
        if self.reason is not None or not self._pending:
            return
        if self._transport.is_closing():
            self.close("gone")
            return
        self._write_pending()
        if self._transport.get_write_buffer_size() > self._max_pending:
            self.close("slow")

    def send(self, data: bytes, now: float) -> bool:
        """Write bytes shared with other streams (framed for this one); whether they went."""
        if self.reason is not None:
            return False
        transport = self._transport
        if transport.is_closing():
            self.close("gone")
            return False
        transport.write(data)
        self.last_write = now
        if transport.get_write_buffer_size() > self._max_pending:
            self.close("slow")
        return True

    def close(self, reason: DisconnectReason) -> None:
        """End the stream for `reason`; idempotent.

        A live stream's connection closes: cleanly (what is queued, then the end of the
        body) unless its client is slow or gone, when it is cut off. Before `start`, the
        response that is still sending the headers and preamble ends the connection.
        """
        if self.reason is not None:
            return
        self.reason = reason
        if reason == "slow":
            self._outbox.counts.slow_disconnects += 1
        elif reason == "closed" and self._started:
            self._outbox.counts.streams_closed += 1
        if self._started:
            self._end_connection(clean=reason not in ("slow", "gone"))
        elif reason == "slow":
            self._transport.abort()  # the response writing the preamble stops with it
        self._pending.clear()
        self._pending_events = 0

    def data_received(self, data: bytes) -> None:
        """An event stream's client has nothing more to say (the stream is never reused)."""

    def connection_lost(self, exc: Exception | None = None) -> None:
        """The connection is gone, or no longer the stream's: the stream ends (`gone`, if
        it had not ended) and lets go of its hub membership and connection slot, once."""
        self.close("gone")
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(self)

    def _end_connection(self, *, clean: bool) -> None:
        transport = self._transport
        if not clean or transport.is_closing():
            transport.abort()  # nothing more can or should reach this client
            return
        if self._pending:
            self._write_pending()
        if self.chunked:
            transport.write(LAST_CHUNK)
        transport.close()
        if transport.get_write_buffer_size():
            # A client that stops reading would keep the connection open for good.
            self._outbox.loop.call_later(CLOSE_LINGER, transport.abort)

    def _write_pending(self) -> None:
        body = b"".join(self._pending)
        self._pending.clear()
        counts = self._outbox.counts
        counts.events_sent += self._pending_events
        counts.bytes_sent += len(body)
        self._pending_events = 0
        if self.chunked:
            self._transport.write(http_chunk(body))
        else:
            self._transport.write(body)
        self.last_write = self._outbox.loop.time()
