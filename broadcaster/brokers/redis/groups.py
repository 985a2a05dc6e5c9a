"""One group's delivery on a Redis Cluster: its sequencer, its channels, and how it
comes back when the link that carries it was lost or its slot moved.

A group (`core/channels.py`) is a set of channels with one sequence, whose keys and
shard channels lie in one slot, so one shard link carries all of them. Its sequencer
works as a single Redis's does; what differs is when it must catch up: not when one
session ends, but when `Shards` says some of its channels were lost (their link went,
or Redis dropped their subscriptions). The group then holds, waits until each lost
channel is subscribed again, reports the newest id it delivered, reads its head,
fences the links that carry it and backfills every channel from its position.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from broadcaster.brokers.redis.client import LINK_ERRORS
from broadcaster.brokers.redis.history import RedisHistory
from broadcaster.brokers.redis.primaries import REDIRECTIONS, Primaries
from broadcaster.brokers.redis.reports import SeenReports
from broadcaster.brokers.redis.sequencer import Sequencer
from broadcaster.core.history import Snapshot
from broadcaster.core.ids import EventId

log = logging.getLogger(__name__)

T = TypeVar("T")
HEAD_ATTEMPTS = 3  # reads of a new group's head before its channels subscribe anyway


def group_key(group: str) -> str:
    """A name in `group`'s slot and key space (`{g}`): Redis hashes only the tag, and
    an untagged channel `g` is in group `g`, in the same slot."""
    return f"{{{group}}}"


class GroupHistory:
    """The history reader of one group's sequencer: its reads go to the primary that
    serves the group; one that meets a redirection reads the slot map again and raises,
    and the sequencer retries it."""

    def __init__(self, history: RedisHistory, primaries: Primaries, group: str) -> None:
        self._history = history
        self._primaries = primaries
        self._key = group_key(group)

    async def read(self, positions: Mapping[str, str]) -> Snapshot:
        """Each channel's entries after its own position."""
        return await self._redirected(lambda: self._history.read(positions))

    async def head(self) -> EventId | None:
        """The newest id of the group's sequence."""
        return await self._redirected(lambda: self._history.head(self._key))

    async def _redirected(self, read: Callable[[], Awaitable[T]]) -> T:
        try:
            return await read()
        except REDIRECTIONS:
            await self._primaries.redirected()
            raise


@dataclass(eq=False)
class Group:
    """A group's sequencer and the state of its channels on this node."""

    name: str
    sequencer: Sequencer
    history: GroupHistory
    reports: SeenReports
    fence: Callable[[], Awaitable[bool]]
    """A PING on every link that carries the group's channels (True once all answered)."""
    max_backoff: float = 5.0
    channels: set[str] = field(default_factory=set)
    """Channels with local subscribers."""
    waiting: list[Callable[[], None]] | None = field(default_factory=list)
    """Subscriptions and unsubscriptions held, in call order, until the group's head is
    read (None once it is): channels subscribed from then on start after it."""
    lost: set[str] = field(default_factory=set)
    """Lost channels not subscribed again yet: the group holds until they are."""
    resync: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Read the head, then let the waiting subscriptions go."""
        self.task = asyncio.create_task(self._open(), name=f"group-{self.name}")

    def when_open(self, action: Callable[[], None]) -> None:
        """Run `action` now, or after the head read, in call order."""
        if self.waiting is None:
            action()
        else:
            self.waiting.append(action)

    def lose(self, channels: set[str]) -> None:
        """`channels` were lost (their link went, or their slot moved): hold everything
        until they are subscribed again, then backfill."""
        lost = channels & self.channels
        if not lost:
            return
        self.lost |= lost
        if self.waiting is None and self.task is not None:
            self.task.cancel()  # a recovery under way starts over
        self.resync = self.sequencer.hold(self.channels)

    def subscribed(self, channel: str) -> None:
        """`channel`'s subscription is confirmed (again)."""
        if channel not in self.channels:
            return
        self.sequencer.started(channel)
        self.forget_lost(channel)

    def forget_lost(self, channel: str) -> None:
        """`channel` is back, or left: the recovery waits for it no more."""
        if channel in self.lost:
            self.lost.discard(channel)
            if not self.lost:
                self.task = asyncio.create_task(self._recover(), name=f"recover-{self.name}")

    def close(self) -> None:
        """Stop every task of the group (no channel wants it any more)."""
        if self.task is not None:
            self.task.cancel()
        self.sequencer.cancel()
        self.reports.cancel()

    async def _open(self) -> None:
        try:
            for attempt in range(HEAD_ATTEMPTS):
                try:
                    self.sequencer.note_head(await self.history.head())
                    break
                except LINK_ERRORS as exc:
                    # Subscribed without: they start at their first message or replay.
                    log.warning("cannot read the head of group %r: %s", self.name, exc)
                    await asyncio.sleep(0.05 * 2**attempt)
        finally:
            waiting, self.waiting = self.waiting or [], None
            for action in waiting:
                action()

    async def _recover(self) -> None:
        sequencer = self.sequencer
        if sequencer.seen is not None:
            try:
                await self.reports.report(str(sequencer.seen))
            except LINK_ERRORS as exc:
                log.warning("cannot report the newest id of group %r: %s", self.name, exc)
        delay = 0.05
        while True:
            try:
                sequencer.note_head(await self.history.head())
                break
            except LINK_ERRORS as exc:
                log.warning("cannot read the head of group %r, retrying: %s", self.name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        if self.resync:
            await self.fence()  # every SSUBSCRIBE above is in effect
            resync, self.resync = self.resync, set()
            sequencer.backfill(resync & self.channels)
