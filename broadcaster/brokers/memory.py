"""The embedded broker: one process, no Redis, the same ids, history and resume."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Sequence

from broadcaster.brokers.config import DEFAULT_CONFIG, LibraryConfig
from broadcaster.brokers.protocol import (
    CLOSED_REASON,
    IDEMPOTENCY_MAX_KEYS,
    KEY_LIMIT_REASON,
    ChannelClosed,
    Deliver,
    KeyLimit,
)
from broadcaster.core.history import ChannelHistory, Entry, Head, Snapshot, Start, begin
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.publication import Publication
from broadcaster.core.replay import Replay

SHARED_REPLAY_MS = 100
MAX_SHARED_REPLAYS = 1024


class MemoryBroker:
    """Delivers to this process's subscribers and keeps each channel's recent history."""

    def __init__(
        self,
        *,
        config: LibraryConfig = DEFAULT_CONFIG,
        max_replay_bytes: int = 4 * 1_048_576,
    ) -> None:
        self._deliver: Deliver | None = None
        self._channels: set[str] = set()
        self._maxlen = config.history_maxlen
        self._max_replay_bytes = max_replay_bytes
        self._ttl_ms = config.history_ttl * 1000
        self._epoch_ms = _now_ms()
        self._last = EventId(self._epoch_ms, 0)
        # Least recently published first, so idle channels expire from the front.
        self._history: OrderedDict[str, deque[Entry]] = OrderedDict()
        self._published_ms: dict[str, int] = {}
        # (channel, idempotency key) -> the first publish's id, and until when it counts.
        self._keys: OrderedDict[tuple[str, str], tuple[str, int]] = OrderedDict()
        self._window_ms = round(config.idempotency_window * 1000)
        self._counted: dict[str, tuple[int, int]] = {}  # channel -> keys, until when
        # Replays computed since the last publish, shared by clients asking the same (a
        # reconnect storm): the snapshot, merge and encoding are done once. Kept at most
        # SHARED_REPLAY_MS, since an old id's fate (expired or unknown) depends on the time.
        self._replays: dict[tuple[tuple[str, ...], Start], Replay] = {}
        self._replays_of: tuple[EventId, int] = (self._last, 0)

    @property
    def connected(self) -> bool:
        """Always true while started: there is nothing to lose a connection to."""
        return self._deliver is not None

    async def start(self, deliver: Deliver) -> None:
        """Begin delivering to `deliver`."""
        self._deliver = deliver

    async def close(self) -> None:
        """Stop delivering."""
        self._deliver = None

    def group(self, channel: str) -> str:
        """Every channel is in one group: one sequence."""
        return ""

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """Subscriptions take effect at once."""
        self._channels.add(channel)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def unsubscribe(self, channel: str) -> None:
        """Stop delivering `channel`."""
        self._channels.discard(channel)

    async def publish(self, batch: Sequence[Publication]) -> list[str]:
        """Give each message the next id, keep it in history, deliver it at once."""
        return [self._publish(publication) for publication in batch]

    def _publish(self, publication: Publication) -> str:
        now = max(_now_ms(), self._last.ms)
        self._expire(now)
        remembered = None
        if publication.idempotency_key is not None:
            remembered = (publication.channel, publication.idempotency_key)
            first = self._keys.get(remembered)
            if first is not None:
                return first[0]
        channel = publication.channel
        newest = self._history.get(channel)
        if newest and newest[-1].message.closes and not publication.reopen:
            raise ChannelClosed(CLOSED_REASON)
        if remembered is not None:
            self._count_key(channel, now)
        self._last = EventId(now, self._last.seq + 1)
        history = self._history.pop(channel, None) or deque(maxlen=self._maxlen)
        prev = history[-1].id if history else None
        sent = Message(
            publication.data, publication.event, str(self._last), _str(prev), now, publication.close
        )
        history.append(Entry(self._last, prev, sent))
        self._history[channel] = history
        self._published_ms[channel] = now
        if remembered is not None:
            self._keys[remembered] = (str(self._last), now + self._window_ms)
        if self._deliver is not None and channel in self._channels:
            self._deliver(channel, sent)
        return str(self._last)

    def _count_key(self, channel: str, now: int) -> None:
        """Count a new key against the channel's bound (one window from its first key)."""
        count, until = self._counted.get(channel, (0, 0))
        if until <= now:
            count, until = 0, now + self._window_ms
        if count >= IDEMPOTENCY_MAX_KEYS:
            raise KeyLimit(KEY_LIMIT_REASON)
        self._counted[channel] = (count + 1, until)

    async def closed(self, channels: Sequence[str]) -> dict[str, EventId]:
        """The channels whose newest message closed them, with its id."""
        self._expire(_now_ms())
        ends = {}
        for channel in channels:
            history = self._history.get(channel)
            if history and history[-1].message.closes:
                ends[channel] = history[-1].id
        return ends

    async def replay(self, channels: Sequence[str], start: Start) -> Replay:
        """What `channels` replay from `start`: missed messages (or resets), or retained ones,
        within MAX_REPLAY_BYTES."""
        now = _now_ms()
        self._expire(now)
        last, since = self._replays_of
        if last != self._last or now - since > SHARED_REPLAY_MS:
            self._replays.clear()
            self._replays_of = (self._last, now)
        key = (tuple(channels), start)
        shared = self._replays.get(key)
        if shared is None:
            if len(self._replays) >= MAX_SHARED_REPLAYS:
                self._replays.clear()
            shared = self._replays[key] = self._read(channels, start, now)
        return shared

    def _read(self, channels: Sequence[str], start: Start, now: int) -> Replay:
        position = EventId.parse(start.after) if start.after is not None else None
        read = {}
        for channel in channels:
            history = self._history.get(channel)
            entries = list(history or ())
            if start.after is not None:
                entries = [e for e in entries if position is not None and e.id > position]
            elif start.tail is not None:
                entries = entries[max(0, len(entries) - start.tail) :]
            read[channel] = ChannelHistory.after(position, history is not None, entries)
        head = Head(self._last, self._epoch_ms) if self._last.seq else None
        replay = begin(start, Snapshot(head, now, self._ttl_ms, read))
        return replay.bounded(self._max_replay_bytes, channels).paged()

    def _expire(self, now: int) -> None:
        # Keys expire in the order they were given (one window for all).
        while self._keys and next(iter(self._keys.values()))[1] <= now:
            self._keys.popitem(last=False)
        if not self._ttl_ms:
            return
        while self._history:
            channel = next(iter(self._history))
            if now - self._published_ms[channel] <= self._ttl_ms:
                return
            del self._history[channel], self._published_ms[channel]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _str(value: EventId | None) -> str | None:
    return None if value is None else str(value)
