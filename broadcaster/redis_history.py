"""Reading channel history from Redis streams in one atomic step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis.asyncio as redis

from .history import ChannelHistory, Entry, EventId, Head, Snapshot
from .message import Message


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

    async def snapshot(self, channels: Sequence[str], after: str) -> Snapshot:
        """The sequence's head and every entry after `after` on `channels`, atomically."""
        return await self.read(dict.fromkeys(channels, after))

    async def read(self, positions: Mapping[str, str]) -> Snapshot:
        """The sequence's head and each channel's entries after its position, atomically."""
        parsed = {channel: EventId.parse(after) for channel, after in positions.items()}
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hmget(self._prefix + "meta", ["ms", "seq", "epoch"])
            pipe.time()
            for channel, position in parsed.items():
                key = f"{self._prefix}history:{channel}"
                pipe.exists(key)
                if position is not None:
                    pipe.xrange(key, min=f"({position}", max="+")
            results = await pipe.execute()
        (ms, seq, epoch), (seconds, micros), rest = results[0], results[1], iter(results[2:])
        head = None if seq is None else Head(EventId(int(ms), int(seq)), int(epoch))
        read = {}
        for channel, position in parsed.items():
            exists = bool(next(rest))
            entries = [_entry(item) for item in next(rest)] if position is not None else []
            read[channel] = ChannelHistory(exists, entries)
        return Snapshot(head, seconds * 1000 + micros // 1000, self._ttl_ms, read)


def _entry(item: tuple[bytes, dict[bytes, bytes]]) -> Entry:
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
