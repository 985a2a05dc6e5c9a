"""One client's event stream, and the outbox that coalesces writes per loop turn."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from .history import EventId
from .metrics import Counts
from .sse import HEARTBEAT

# Flushing may take at most about half the loop's time: when events come back sooner
# after a flush than that flush took, the next flush waits out the difference (up to
# this bound). Events that arrive meanwhile share one write per stream, so under
# overload throughput grows with the load and latency stays bounded, instead of a
# backlog queueing behind one write per event. Under light load nothing waits.
MAX_FLUSH_DEFER = 0.05


class Outbox:
    """Flushes every stream written since the last flush, with one write per stream."""

    __slots__ = ("_dirty", "_last_cost", "_last_end", "_scheduled", "counts", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, counts: Counts | None = None) -> None:
        self.loop = loop
        self.counts = counts or Counts()
        self._dirty: list[Stream] = []
        self._scheduled = False
        self._last_cost = 0.0
        self._last_end = 0.0

    def mark(self, stream: Stream) -> None:
        """Have `stream` flushed at the end of this loop turn (later when overloaded)."""
        self._dirty.append(stream)
        if not self._scheduled:
            self._scheduled = True
            wait = self._last_cost - (self.loop.time() - self._last_end)
            if wait <= 0:
                self.loop.call_soon(self._flush)
            else:
                self.loop.call_later(min(wait, MAX_FLUSH_DEFER), self._flush)

    def _flush(self) -> None:
        started = self.loop.time()
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for stream in dirty:
            stream.flush()
        self._last_end = self.loop.time()
        self._last_cost = self._last_end - started


class Stream:
    """An open SSE response: frames are queued, then written straight to the transport.

    Frames pushed before `start` wait, so a stream can subscribe before its headers go out
    and before its replay is read; `start` then drops the ones the replay already holds.
    """

    __slots__ = (
        "_chunked",
        "_max_pending",
        "_outbox",
        "_pending",
        "_pending_events",
        "_pending_ids",
        "_started",
        "_transport",
        "channels",
        "closed",
        "expires_at",
        "last_write",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        outbox: Outbox,
        channels: Sequence[str],
        *,
        max_pending_bytes: int,
        expires_at: float = math.inf,
    ) -> None:
        self.channels = tuple(channels)
        self.expires_at = expires_at
        self.closed: asyncio.Future[str] = outbox.loop.create_future()
        self.last_write = outbox.loop.time()
        self._transport = transport
        self._outbox = outbox
        self._chunked = False
        self._max_pending = max_pending_bytes
        self._pending: list[bytes] = []
        self._pending_ids: list[EventId | None] | None = []  # only until start
        self._pending_events = 0
        self._started = False

    def start(self, *, chunked: bool, replayed_through: EventId | None = None) -> None:
        """Headers (and any replay) are out: from now on frames go straight to the transport.

        Frames that waited and are not newer than `replayed_through` are dropped.
        """
        if replayed_through is not None and self._pending_ids is not None:
            kept = [
                frame
                for frame, id_ in zip(self._pending, self._pending_ids, strict=True)
                if id_ is None or id_ > replayed_through
            ]
            self._pending_events -= len(self._pending) - len(kept)
            self._pending = kept
        self._pending_ids = None
        self._chunked = chunked
        self._started = True
        self.last_write = self._outbox.loop.time()
        if self._pending:
            self._outbox.mark(self)

    def beat(self) -> None:
        """Queue a heartbeat (not counted as an event)."""
        self.push(HEARTBEAT, event=False)

    def push(self, frame: bytes, id_: EventId | None = None, *, event: bool = True) -> None:
        """Queue `frame` (of message `id_`); it is written at the end of this loop turn."""
        if self.closed.done():
            return
        self._pending_events += event
        if self._started:
            if not self._pending:
                self._outbox.mark(self)
        elif self._pending_ids is not None:
            self._pending_ids.append(id_)
        self._pending.append(frame)

    def flush(self) -> None:
        """Write every queued frame in one write; cut the client off if it cannot keep up."""
        if self.closed.done():
            self._pending.clear()
            self._pending_events = 0
            return
        if not self._pending:
            return
        if self._transport.is_closing():
            self.close("gone")
            return
        self._write_pending()
        if self._transport.get_write_buffer_size() > self._max_pending:
            self.close("slow")

    def close(self, reason: str) -> None:
        """End the stream for `reason` (`shutdown`, `slow`, `gone`, ...); idempotent."""
        if self.closed.done():
            return
        if reason == "slow":
            self._outbox.counts.slow_disconnects += 1
        clean = reason != "slow" and self._started and not self._transport.is_closing()
        if clean and self._pending:
            self._write_pending()
        self._pending.clear()
        self._pending_events = 0
        self.closed.set_result(reason)

    def _write_pending(self) -> None:
        body = b"".join(self._pending)
        self._pending.clear()
        counts = self._outbox.counts
        counts.events_sent += self._pending_events
        counts.bytes_sent += len(body)
        self._pending_events = 0
        if self._chunked:
            self._transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            self._transport.write(body)
        self.last_write = self._outbox.loop.time()
