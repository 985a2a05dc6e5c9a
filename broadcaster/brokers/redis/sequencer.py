"""Gap-free delivery of durable messages, in one global id order, over a lossy link."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import Protocol, TypeVar

from broadcaster.brokers.protocol import Deliver
from broadcaster.core.history import Snapshot, replay
from broadcaster.core.ids import ORIGIN, EventId
from broadcaster.core.message import Message
from broadcaster.core.replay import Replay

log = logging.getLogger(__name__)


Recovered = tuple[EventId, str, Message]
Held = tuple[str, Message]
T = TypeVar("T")

# How far ahead of what the node knows (its clock, the newest id it delivered, the last
# head it read) an id may be before it is checked against the sequence's head. A failover
# moves ids 10 s ahead of the clock; a genuine id past this is confirmed by one read.
HORIZON_MS = 10_000


class HistoryReader(Protocol):
    """Where missed messages are read back from."""

    async def read(self, positions: Mapping[str, str]) -> Snapshot:
        """Each channel's entries after its own position."""
        ...

    async def head(self) -> EventId | None:
        """The newest id published so far."""
        ...


class Sequencer:
    """Hands messages to `deliver` so that every client sees ids only increase, with no gap.

    Redis drops pub/sub messages only across a disconnect (network error or output-buffer
    limit). After one, and whenever a message names a `prev` newer than the last delivered
    on its channel, *every* channel is held: what was missed is read back from history,
    a barrier (a PING through the pub/sub link) makes sure every message published before
    that read has arrived, and history and held messages go out merged in id order.

    No message moves a position past what the sequence confirms: one whose id lies beyond
    the node's horizon (`HORIZON_MS` past its clock, the newest id it delivered and the
    last head it read) holds everything while the head is read, and is dropped, logged
    and passed to `rejected` unless the head has reached it. A forged id far ahead would
    otherwise make every genuine message look delivered already.
    """

    def __init__(
        self,
        history: HistoryReader,
        deliver: Deliver,
        barrier: Callable[[], Awaitable[object]],
        *,
        retry_errors: tuple[type[Exception], ...],
        max_backoff: float = 5.0,
        rejected: Callable[[str, Message], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._history = history
        self._deliver = deliver
        self._barrier = barrier
        self._retry_errors = retry_errors
        self._max_backoff = max_backoff
        self._rejected = rejected
        self._clock = clock
        self._confirmed: EventId | None = None  # the newest head read
        self._read_empty = False  # a head read found no sequence yet
        self._suspect: Held | None = None  # beyond the horizon, waiting for the head
        self._horizon_ms = 0  # the last horizon worked out (`_horizon`)
        self.seen: EventId | None = None
        """The newest durable id delivered on any channel."""
        self._last: dict[str, EventId] = {}
        # The id of the last message emitted per channel: `_last` only grows, so a `prev`
        # equal to it is not newer than `_last`.
        self._emitted: dict[str, str] = {}
        # Subscribed, or backfilled, with no durable message since: the next one's `prev`
        # predates the subscription, or was covered by the backfill's read (it was found,
        # or reset, or it is no message of the history: it cannot be filled).
        self._fresh: set[str] = set()
        # Channels whose position a replay set, and that delivered nothing since: their
        # streams have everything up to their replays' heads, the lowest of which is the
        # position (no stream got anything newer from here, so lowering it repeats none).
        self._floors: set[str] = set()
        self._held: list[Held] | None = None
        self._gaps: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def receive(self, channel: str, message: Message) -> None:
        """A live message: deliver it now, or hold it while a gap is filled."""
        if self._held is not None:
            self._held.append((channel, message))
            return
        position = message.position()
        # The horizon is worked out again only when an id passes the last one (once in
        # 10 s of ids, or for a suspect), not read off the clock for every message.
        if position is not None and position.ms > self._horizon_ms:
            self._horizon_ms = self._horizon()
            if position.ms > self._horizon_ms:
                self._held = [(channel, message)]
                self._suspect = (channel, message)
                self._start()
                return
        last = self._last.get(channel)
        if position is None:
            pass  # raw text: no id, no prev
        elif channel in self._fresh:
            self._fresh.discard(channel)
        elif last is not None and message.prev != self._emitted.get(channel):
            # (A `prev` this channel emitted is not newer than `last`: no parse needed,
            # and that is the common case.)
            prev = EventId.parse(message.prev)
            if prev is not None and prev > last:
                self._held = [(channel, message)]
                self.backfill([channel])
                return
        self._emit(channel, message)

    @property
    def holding(self) -> bool:
        """Whether messages are held (a backfill, or a check of the head, is under way):
        what a replay read now covers may still be delivered after it."""
        return self._held is not None

    def note_head(self, head: EventId | None) -> None:
        """The sequence's head (None: empty), read at a session's start: channels
        subscribed from now on start after it. (Not a delivered id: after a take-over it
        was never issued, and `seen`, which this node reports as delivered, must not
        claim it.)"""
        if head is None:
            self._read_empty = True
        elif self._confirmed is None or head > self._confirmed:
            self._confirmed = head

    def started(self, channel: str) -> None:
        """The channel's streams go live: its subscription is confirmed, or the link is
        down (it is subscribed, and backfilled, on reconnect). Its messages from now on
        are newer than what the node knows (`_known`). That may be older than the
        subscription: a backfill from there can bring messages published before it,
        which a stream drops when it has a newer one (they are not its; `Stream.push`)."""
        known = self._known()
        if channel not in self._last and known is not None:
            self._last[channel] = known
            self._fresh.add(channel)

    def forget(self, channel: str) -> None:
        """The channel has no local subscriber anymore."""
        self._last.pop(channel, None)
        self._floors.discard(channel)
        self._emitted.pop(channel, None)
        self._fresh.discard(channel)

    def hold(self, channels: Iterable[str]) -> set[str]:
        """A new session (the link dropped, or this is the first): hold everything while
        `channels`, once subscribed again, are backfilled.

        Call it before `note_head` of the session. A channel with no position yet (it was
        `started` before the node knew anything) starts at what the node knew before this
        session. Returns the channels to backfill.
        """
        self.cancel()
        known = self._known()
        resync = set()
        for channel in channels:
            if channel not in self._last:
                if known is None:
                    continue  # never reached Redis: the channel starts at this session
                self._last[channel] = known
            resync.add(channel)
        self._held = [] if resync else None
        return resync

    def backfill(self, channels: Iterable[str]) -> None:
        """Read back what `channels` missed, then release everything held, in order."""
        if self._held is None:
            self._held = []
        self._gaps.update(channels)
        self._start()

    def replayed(self, channels: Iterable[str], head: EventId, *, caught_up: bool) -> None:
        """A client read history up to `head`, then takes what comes next from here.

        A channel with no position yet (its first clients are joining, perhaps across a
        reconnect) starts at the lowest head its clients read: the next backfill goes
        back that far, and what they read again their streams drop by id (theirs were
        not caught up). A `caught_up` read with nothing held moves a channel's position
        up to `head` (every message before it has been delivered): a later backfill need
        not go back further. Otherwise a channel this node delivered keeps its position,
        for its other clients may miss what was published meanwhile.
        """
        for channel in channels:
            last = self._last.get(channel)
            if last is None or (channel in self._floors and head < last):
                self._last[channel] = head
                self._floors.add(channel)
                self._fresh.discard(channel)
            elif caught_up and self._held is None and last < head:
                self._last[channel] = head
                self._fresh.discard(channel)

    def cancel(self) -> None:
        """Stop the backfill (the link is gone; the next one starts over)."""
        if self._task is not None:
            self._task.cancel()
        self._gaps.clear()
        self._suspect = None

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._catch_up(), name="backfill")

    def _known(self) -> EventId | None:
        """The newest id the node knows (delivered, or a head it read), `ORIGIN` if it
        found the sequence empty, or None if it never read a head."""
        known = [p for p in (self.seen, self._confirmed) if p is not None]
        if known:
            return max(known)
        return ORIGIN if self._read_empty else None

    def _horizon(self) -> int:
        known = int(self._clock() * 1000)
        for position in (self.seen, self._confirmed):
            if position is not None and position.ms > known:
                known = position.ms
        return known + HORIZON_MS

    def _emit(self, channel: str, message: Message) -> None:
        id_ = message.id
        position = message.position()
        if position is not None and id_ is not None:
            last = self._last.get(channel)
            if last is not None and position <= last:
                return  # delivered already
            self._last[channel] = position
            self._emitted[channel] = id_
            if self._floors:
                self._floors.discard(channel)
            if self.seen is None or position > self.seen:
                self.seen = position
        self._deliver(channel, message)

    async def _catch_up(self) -> None:
        delay = 0.05
        while self._gaps or self._suspect is not None:
            gaps = set(self._gaps)
            try:
                await self._fill()
                delay = 0.05
            except Exception:
                # A bug, not an outage (those are retried where they happen): say so, and
                # start over rather than hold every channel until the next reconnect.
                log.exception("backfill failed; starting it over")
                self._gaps |= {channel for channel in gaps if channel in self._last}
                if self._held is None:
                    self._held = []  # nothing newer goes out before the gaps are filled
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
        if self._held is not None:  # (a failed round whose channels were all forgotten)
            self._drain([])

    async def _fill(self) -> None:
        """One round: check a suspect id, or read back what the gaps missed and release
        everything held, in order."""
        if self._suspect is not None:
            suspect, self._suspect = self._suspect, None
            await self._check(*suspect)
            if not self._gaps:
                self._drain([])
                return
        gaps, self._gaps = self._gaps, set()
        positions = {ch: str(self._last[ch]) for ch in gaps if ch in self._last}
        snapshot = await self._retrying(partial(self._history.read, positions))
        await self._barrier()  # everything published before the read is now held
        found: list[Recovered] = []
        for channel, after in positions.items():
            if channel not in self._last:
                continue  # forgotten meanwhile: no local client wants it
            history = {channel: snapshot.channels[channel]}
            one = replace(snapshot, channels=history)
            found += self._recovered(channel, replay(_from(after, snapshot), one))
            self._fresh.add(channel)
        found.sort(key=lambda item: item[0])
        self._drain(found)

    async def _check(self, channel: str, message: Message) -> None:
        """Trust `message` if the sequence's head has reached its id; else drop it."""
        head = await self._retrying(self._history.head)
        position = message.position()
        if head is not None and (self._confirmed is None or head > self._confirmed):
            self._confirmed = head
        if head is not None and position is not None and position <= head:
            return
        if self._held:
            self._held.remove((channel, message))
        log.warning(
            "dropped a message on %r: its id %s is ahead of the sequence's head %s "
            "(not published by sse_publish)",
            channel,
            message.id,
            head,
        )
        if self._rejected is not None:
            self._rejected(channel, message)

    def _recovered(self, channel: str, missed: Replay) -> list[Recovered]:
        if missed.resets and missed.head is not None:
            # Retention ran out before the node caught up: its clients must reload.
            log.warning("history of %r was trimmed before the node caught up", channel)
            self._last[channel] = max(self._last[channel], missed.head)
            return [(missed.head, channel, notice) for notice in missed.reset_messages()]
        # A failover notice stands where the lost messages would have been, on this channel.
        return [(position, c or channel, m) for position, c, m in missed.items]

    def _drain(self, recovered: list[Recovered]) -> None:
        held, self._held = self._held or [], None
        # Held messages arrived in publish order: merge the recovered ones in by id.
        older = iter(recovered)
        pending = next(older, None)
        for channel, message in held:
            position = message.position()
            while pending is not None and position is not None and pending[0] < position:
                self._emit(pending[1], pending[2])
                pending = next(older, None)
            self.receive(channel, message)
        while pending is not None:
            self._emit(pending[1], pending[2])
            pending = next(older, None)

    async def _retrying(self, read: Callable[[], Awaitable[T]]) -> T:
        delay = 0.05
        while True:
            try:
                return await read()
            except self._retry_errors as exc:
                log.warning("backfill failed, retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)


def _from(after: str, snapshot: Snapshot) -> str:
    """Where a backfill from `after` replays from: `ORIGIN` is just before the first id
    of the sequence (its epoch), which is no id a replay would take for unknown."""
    if after == str(ORIGIN) and snapshot.head is not None:
        return str(EventId(snapshot.head.epoch_ms, 0))
    return after
