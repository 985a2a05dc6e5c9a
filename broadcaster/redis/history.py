"""Reading channel history from Redis streams in one atomic step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from ..history import ChannelHistory, Entry, Gap, Head, Snapshot, Start
from ..ids import EventId
from ..message import Message


class RedisHistory:
    """Reads the streams and sequence that `sse_publish` maintains."""

    def __init__(self, client: redis.Redis, *, prefix: str, ttl: int) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_ms = ttl * 1000

    async def head(self) -> EventId | None:
        """The newest id published so far."""
        ms, seq = await self._client.hmget(self._prefix + "meta", ["ms", "seq"])
        return None if ms is None or seq is None else EventId(int(ms), int(seq))

    async def snapshot(self, channels: Sequence[str], start: Start) -> Snapshot:
        """The sequence's head and what `start` asks of `channels`, atomically."""
        if start.after is not None:
            return await self.read(dict.fromkeys(channels, start.after))
        return await self._read(dict.fromkeys(channels, _Range(newest=start.tail)))

    async def read(self, positions: Mapping[str, str]) -> Snapshot:
        """The sequence's head and each channel's entries after its position, atomically."""
        ranges = {}
        for channel, after in positions.items():
            position = EventId.parse(after)
            ranges[channel] = None if position is None else _Range(after=position)
        return await self._read(ranges)

    async def _read(self, ranges: Mapping[str, _Range | None]) -> Snapshot:
        # One MULTI/EXEC: the head and every range, so none can miss a concurrent publish.
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hmget(self._prefix + "meta", ["ms", "seq", "epoch"])
            pipe.time()
            pipe.lrange(self._prefix + "gaps", 0, -1)
            for channel, wanted in ranges.items():
                key = f"{self._prefix}history:{channel}"
                pipe.exists(key)
                if wanted is not None:
                    wanted.request(pipe, key)
            results = await pipe.execute()
        (ms, seq, epoch), (seconds, micros), gaps = results[0], results[1], results[2]
        rest = iter(results[3:])
        head = None if seq is None else Head(EventId(int(ms), int(seq)), int(epoch))
        read = {}
        for channel, wanted in ranges.items():
            exists = bool(next(rest))
            entries = [] if wanted is None else wanted.entries(next(rest))
            read[channel] = ChannelHistory(exists, entries)
        found = (Gap.parse(raw.decode() if isinstance(raw, bytes) else raw) for raw in gaps)
        now = seconds * 1000 + micros // 1000
        return Snapshot(head, now, self._ttl_ms, read, tuple(gap for gap in found if gap))


RawEntry = tuple[bytes, dict[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class _Range:
    """Which entries of a stream to read: after an id, or the newest N (None: all)."""

    after: EventId | None = None
    newest: int | None = None

    def request(self, pipe: Pipeline, key: str) -> None:
        """Queue the read on `pipe`."""
        if self.after is not None:
            pipe.xrange(key, min=f"({self.after}", max="+")
        elif self.newest is None:
            pipe.xrange(key)
        else:
            # COUNT 0 would mean no limit to Redis: ask for one and keep none.
            pipe.xrevrange(key, count=max(self.newest, 1))

    def entries(self, raw: list[RawEntry]) -> list[Entry]:
        """The entries read, oldest first."""
        if self.after is None and self.newest is not None:
            raw = raw[::-1] if self.newest else []  # XREVRANGE: newest first
        return [_entry(item) for item in raw]


def _entry(item: RawEntry) -> Entry:
    raw_id, fields = item
    id_ = raw_id.decode()
    prev = fields.get(b"p", b"").decode() or None
    event = fields.get(b"e", b"").decode("utf-8", "replace") or None
    data = fields.get(b"d", b"").decode("utf-8", "replace")
    position = EventId.parse(id_)
    if position is None:
        raise ValueError(f"history entry {id_!r} was not written by sse_publish")
    message = Message(data, event, id_, prev, position.ms)
    return Entry(position, EventId.parse(prev), message)
