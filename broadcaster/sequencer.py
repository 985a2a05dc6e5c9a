"""Gap-free, in-order delivery of durable messages over a lossy pub/sub link."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from .broker import Deliver
from .history import EventId, Replay, Snapshot, replay
from .message import Message

log = logging.getLogger(__name__)


class HistoryReader(Protocol):
    """Where missed messages are read back from."""

    async def snapshot(self, channels: list[str], after: str) -> Snapshot:
        """Entries after `after` on `channels`, atomically."""
        ...


class Sequencer:
    """Hands each channel's messages to `deliver` in id order, backfilling any it missed.

    Every durable message names its channel's previous id. When that is newer than the
    last id delivered on the channel, messages were lost (Redis pub/sub is at-most-once):
    later messages are held while the gap is read back from history.
    """

    def __init__(
        self,
        history: HistoryReader,
        deliver: Deliver,
        *,
        retry_errors: tuple[type[Exception], ...],
        max_backoff: float = 5.0,
    ) -> None:
        self._history = history
        self._deliver = deliver
        self._retry_errors = retry_errors
        self._max_backoff = max_backoff
        self.seen: EventId | None = None
        """The newest durable id delivered on any channel."""
        self._last: dict[str, EventId] = {}
        self._held: dict[str, list[Message]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def receive(self, channel: str, message: Message) -> None:
        """A live message: deliver it, or hold it behind a backfill of its channel."""
        held = self._held.get(channel)
        if held is not None:
            held.append(message)
            return
        position = EventId.parse(message.id)
        if position is not None:
            last = self._last.get(channel)
            if last is not None:
                if position <= last:
                    return  # a backfill delivered it already
                prev = EventId.parse(message.prev)
                if prev is not None and prev > last:
                    self._held[channel] = [message]
                    self._spawn(channel)
                    return
            self._advance(channel, position)
        self._deliver(channel, message)

    def started(self, channel: str) -> None:
        """The channel's subscription is confirmed: its next messages are newer than `seen`."""
        if channel not in self._last and self.seen is not None:
            self._last[channel] = self.seen

    def forget(self, channel: str) -> None:
        """The channel has no local subscriber anymore."""
        self._last.pop(channel, None)

    def hold(self, channels: Iterable[str]) -> set[str]:
        """Hold live messages of every known channel (the link dropped); returns them."""
        self.cancel()
        self._held = {channel: [] for channel in channels if channel in self._last}
        return set(self._held)

    def backfill(self, channel: str) -> None:
        """Read back what `channel` missed since its last delivered id, then release it."""
        self._held.setdefault(channel, [])
        self._spawn(channel)

    def replayed(self, channels: Iterable[str], head: EventId) -> None:
        """A client read history up to `head`: a later backfill need not go back further."""
        for channel in channels:
            last = self._last.get(channel)
            if channel not in self._held and (last is None or last < head):
                self._last[channel] = head

    def cancel(self) -> None:
        """Stop every backfill (the link is gone; the next one starts over)."""
        for task in self._tasks:
            task.cancel()

    def _advance(self, channel: str, position: EventId) -> None:
        self._last[channel] = position
        if self.seen is None or position > self.seen:
            self.seen = position

    def _spawn(self, channel: str) -> None:
        task = asyncio.create_task(self._catch_up(channel), name=f"backfill {channel}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up(self, channel: str) -> None:
        last = self._last.get(channel)
        if last is not None:
            missed = await self._read_after(channel, last)
            if missed.resets and missed.head is not None:
                # Retention ran out before the node caught up: its clients must reload.
                for notice in missed.reset_messages():
                    self._deliver(channel, notice)
                self._last[channel] = max(last, missed.head)
            for _, message in missed.messages:
                self._advance(channel, EventId.parse(message.id) or last)
                self._deliver(channel, message)
        # Live messages that waited go out now, unless a new gap holds them again.
        for message in self._held.pop(channel, []):
            self.receive(channel, message)

    async def _read_after(self, channel: str, last: EventId) -> Replay:
        delay = 0.05
        while True:
            try:
                return replay(str(last), await self._history.snapshot([channel], str(last)))
            except self._retry_errors as exc:
                log.warning("backfill of %r failed, retrying: %s", channel, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
