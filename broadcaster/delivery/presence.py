"""Presence: how many subscribers each channel has on every node, and who, as this node
tells and reads it; and the joins and leaves it announces."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from broadcaster.brokers.protocol import BrokerUnavailable, PresenceStore
from broadcaster.core.identity import Attendee, AttendeePage, Identity
from broadcaster.core.message import Message
from broadcaster.delivery.hub import Hub

log = logging.getLogger(__name__)
T = TypeVar("T")

INTERVAL = 1.0
"""Seconds between two writes of the channels whose local count changed."""
READ_TIMEOUT = 2.0
"""Seconds a read (`GET /presence`) waits for the store before it is unavailable."""
STOP_TIMEOUT = 1.0
"""Seconds a stopping node gives the store to remove its counts (else they expire)."""
REWRITE_EVERY = 6 * 3600.0
"""Seconds between two writes of every local count (the store's keys expire after a day
without a write; a count that never changes must outlive that)."""


class PresenceTracker:
    """Tells the store this node's count of each channel whose count changed, and its
    seat of each identified subscriber that changed, every `interval`, in one batch, and
    keeps this process alive there (a refresh every third of the store's bound, followed
    by a sweep of dead processes). Without a store (the embedded broker) the counts and
    seats are the hub's, and this node announces joins and leaves itself.

    A join or a leave costs the hub one set insertion (`Hub.changed`, `Roster.changed`);
    no I/O. When the store says this process had lapsed (Redis was out of reach longer
    than the bound, and readers may have dropped its counts) everything is written again,
    at once and once more an interval later.
    """

    def __init__(
        self,
        hub: Hub,
        store: PresenceStore | None,
        *,
        announces: Callable[[str], bool] | None = None,
        bound: float = 5.0,
        interval: float = INTERVAL,
        rewrite_every: float = REWRITE_EVERY,
    ) -> None:
        self._hub = hub
        self._store = store
        self._interval = interval
        self._bound = bound
        self._refresh_every = bound / 3
        self._rewrite_every = rewrite_every
        self._written: set[str] = set()  # channels whose count in the store may not be 0
        self._pending: set[str] = set()  # channels of a batch the store refused
        self._pending_seats: set[tuple[str, str]] = set()  # (and seats)
        self._task: asyncio.Task[None] | None = None
        self._rewrites = 0  # how many of the next flushes write every count
        self._alive = False  # the last refresh succeeded
        self._outage = False  # one warning per outage
        self._local = LocalAnnouncer(hub, announces) if store is None and announces else None
        self._stopping = False

    @property
    def shared(self) -> bool:
        """Whether counts cover every node on the broker (else: this node's)."""
        return self._store is not None

    async def start(self) -> None:
        """Start telling the store (if any), or announcing (without one, if asked)."""
        if self._store is not None:
            self._hub.track_changes()
            self._hub.roster.track_changes()
            self._task = asyncio.create_task(self._run(), name="presence")
        elif self._local is not None:
            self._hub.roster.track_changes()
            self._task = asyncio.create_task(self._local.run(self._interval), name="presence")

    async def stop(self) -> None:
        """Stop the loop, then remove this process's counts, seats and liveness from the
        store (best effort: unreachable, they expire within the bound)."""
        self._stopping = True  # (a cancellation lost inside a Redis call still ends it)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._store is None:
            return
        try:
            await within(STOP_TIMEOUT, self._store.remove(sorted(self._written | self._pending)))
        except BrokerUnavailable as exc:
            log.warning("presence: could not remove this node's counts, they expire: %s", exc)
        await self._store.close()

    async def counts(self, channels: Sequence[str]) -> dict[str, int]:
        """Subscribers of each channel: on every node, or this node's without a store.
        Raises BrokerUnavailable when the store cannot be read."""
        if self._store is None:
            return {channel: self._hub.local_count(channel) for channel in channels}
        return await within(READ_TIMEOUT, self._store.read(channels))

    async def attendees(self, channel: str, after: str | None, limit: int) -> AttendeePage:
        """A page of `channel`'s identified subscribers (by `sub`, after `after`): on every
        node, or this node's without a store. Raises BrokerUnavailable as `counts`."""
        if self._store is None:
            return page_of(self._hub.roster.attendees(channel), after, limit)
        return await within(READ_TIMEOUT, self._store.attendees(channel, after, limit))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        refreshed = rewritten = -float("inf")
        while not self._stopping:
            now = loop.time()
            due = not self._alive or now - refreshed >= self._refresh_every
            if due and await self._refresh():
                refreshed = now
                await self._sweep()
            if now - rewritten >= self._rewrite_every:
                rewritten = now
                self._rewrites = max(self._rewrites, 1)
            if self._alive:
                await self.flush()
            await asyncio.sleep(self._interval)

    async def _refresh(self) -> bool:
        assert self._store is not None
        try:
            lapsed = not await within(self._bound, self._store.refresh())
        except BrokerUnavailable as exc:
            self._alive = False
            self._warn(exc)
            return False
        if lapsed and self._written:
            log.info("presence: this node had lapsed, writing its counts again")
            self._rewrites = 2
        self._alive = True
        return True

    async def _sweep(self) -> None:
        """Clean up after dead processes (one node takes each)."""
        assert self._store is not None
        try:
            swept = await within(self._bound, self._store.sweep())
        except BrokerUnavailable as exc:
            self._warn(exc)
            return
        if swept:
            log.info("presence: swept the counts of %d dead node processes", swept)

    async def flush(self) -> None:
        """Write the counts and seats that changed (or all, when due) in one batch."""
        assert self._store is not None
        roster = self._hub.roster
        channels = self._hub.changed() | self._pending
        seated = roster.changed() | self._pending_seats
        if self._rewrites:
            self._rewrites -= 1
            channels |= self._written | set(self._hub.channels())
            seated |= set(roster.seated())
        if not channels and not seated:
            return
        batch = {c: self._hub.local_count(c) for c in channels}
        seats = {key: roster.seat(*key) for key in seated}
        # Noted before the write: a stop that cancels it still removes what it may set.
        self._written |= {channel for channel, count in batch.items() if count}
        try:
            await within(self._bound, self._store.write(batch, seats))
        except BrokerUnavailable as exc:
            self._pending = channels  # (written with their counts then)
            self._pending_seats = seated
            self._warn(exc)
            return
        self._pending = set()
        self._pending_seats = set()
        if self._outage:
            self._outage = False
            log.info("presence: the store answers again")
        self._written -= {channel for channel, count in batch.items() if not count}

    def _warn(self, exc: BrokerUnavailable) -> None:
        if not self._outage:
            self._outage = True
            log.warning("presence: cannot reach the store, counts wait: %s", exc)


class LocalAnnouncer:
    """Without a store (the embedded broker, one node): every `interval`, a `join` for
    each identified subscriber that came to a channel `announces`, a `leave` for each that
    went, delivered live by the hub (no id, never stored; no publish time: delivered as
    made, they have no latency to measure). A sub that came and went within one interval
    is not announced (coalesced)."""

    def __init__(self, hub: Hub, announces: Callable[[str], bool]) -> None:
        self._hub = hub
        self._announces = announces
        self._announced: dict[tuple[str, str], str] = {}  # -> the data of its `leave`

    async def run(self, interval: float) -> None:
        """Announce what changed, every `interval`."""
        while True:
            await asyncio.sleep(interval)
            self.announce()

    def announce(self) -> None:
        """Announce the joins and leaves since the last call."""
        roster = self._hub.roster
        for channel, sub in sorted(roster.changed()):
            if not self._announces(channel):
                continue
            seat = roster.seat(channel, sub)
            was = self._announced.get((channel, sub))
            if seat is not None and was is None:
                data = self._announced[(channel, sub)] = Identity(sub, seat.info).announcement()
                self._hub.deliver(channel, Message(data, "join"))
            elif seat is None and was is not None:
                del self._announced[(channel, sub)]
                self._hub.deliver(channel, Message(was, "leave"))


def page_of(attendees: Sequence[Attendee], after: str | None, limit: int) -> AttendeePage:
    """The page of `attendees` (sorted by sub) after the sub `after`, at most `limit`."""
    rest = [a for a in attendees if after is None or a.sub > after]
    page = tuple(rest[:limit])
    return AttendeePage(page, page[-1].sub if len(rest) > limit else None)


async def within(seconds: float, call: Awaitable[T]) -> T:
    """`call`'s answer, or BrokerUnavailable after `seconds` (a store that hangs)."""
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError:
        raise BrokerUnavailable(f"presence: no answer within {seconds} s") from None
