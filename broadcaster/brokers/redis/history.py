"""Reading channel history from Redis streams: the sequence's head and the first page of
a replay in one atomic step, later pages as the client takes them (`pages.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from broadcaster.brokers.protocol import BrokerUnavailable
from broadcaster.brokers.redis.client import LINK_ERRORS
from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.brokers.redis.pages import (
    FROM_OLDEST,
    FUNCTION,
    PageRead,
    PageRequest,
    RedisPages,
    entry_of,
)
from broadcaster.core.history import ChannelHistory, Entry, Gap, Head, Snapshot, Start
from broadcaster.core.ids import EventId

Route = Callable[[str], redis.Redis]
"""The client that reaches a channel's sequence: the one Redis, or on a Redis Cluster the
primary that serves the channel's group (a MULTI must run on one connection)."""


class RedisHistory:
    """Reads the streams and sequence that `sse_publish` maintains. Every read is of one
    sequence: on a Redis Cluster, the channels of one read are of one group, whose keys
    `keys` names from any of them, read through the client `route` gives for it."""

    def __init__(
        self,
        route: Route,
        *,
        keys: KeySpace,
        ttl: int,
        max_replay_bytes: int,
        in_flight: asyncio.Semaphore,
    ) -> None:
        self._route = route
        self._in_flight = in_flight  # shared with the broker's publishes
        self._keys = keys
        self._ttl_ms = ttl * 1000
        self._max_replay_bytes = max_replay_bytes

    async def head(self, channel: str = "") -> EventId | None:
        """The newest id published so far (in `channel`'s sequence, on a cluster)."""
        async with self._in_flight:
            reply = await self._route(channel).hmget(self._keys.meta(channel), ["ms", "seq"])
        ms, seq = reply
        return None if ms is None or seq is None else EventId(int(ms), int(seq))

    async def closed(self, channels: Sequence[str]) -> dict[str, EventId]:
        """Which of `channels` are closed: their newest entry closes them (its id each).
        BrokerUnavailable if Redis cannot tell now."""

        async def newest(channel: str) -> Any:
            async with self._in_flight:
                client = self._route(channel)
                return await client.xrevrange(self._keys.history(channel), count=1)

        try:
            replies = await asyncio.gather(*(newest(channel) for channel in channels))
        except LINK_ERRORS as exc:
            raise BrokerUnavailable(f"redis cannot tell which channels are closed: {exc}") from exc
        ends = {}
        for channel, reply in zip(channels, replies, strict=True):
            if reply and reply[0][1].get(b"c"):
                closing = EventId.parse(reply[0][0].decode())
                if closing is not None:
                    ends[channel] = closing
        return ends

    async def snapshot(self, channels: Sequence[str], start: Start) -> Snapshot:
        """The sequence's head and the first page of what `start` asks of `channels`
        (within MAX_REPLAY_BYTES), atomically; the snapshot's `more` reads the rest."""
        if start.after is None:
            tail = -1 if start.tail is None else start.tail
            cursor: str | None = FROM_OLDEST
        else:
            tail, position = -1, EventId.parse(start.after)
            cursor = None if position is None else str(position)  # malformed: all reset
        request = None
        if cursor is not None:
            cursors = (cursor,) * len(channels)
            request = PageRequest(
                tuple(channels), cursors, budget=self._max_replay_bytes, tail=tail
            )
        results = await self._transaction(channels, request)
        head, now, gaps = _sequence(results)
        exists = [bool(found) for found in results[3 : 3 + len(channels)]]
        read = None if request is None else PageRead.parse(request, results[-1])
        history = {}
        for channel, found in zip(channels, exists, strict=True):
            entries = [] if read is None else [e for c, e in read.entries if c == channel]
            broken = read is not None and channel in read.broken
            history[channel] = ChannelHistory(found, entries, broken)
        more = None
        if read is not None and read.more and head is not None:
            more = RedisPages(self.page, read.cursors, head.last)
        cut = () if read is None else read.cut
        return Snapshot(head, now, self._ttl_ms, history, gaps, cut, more)

    async def page(self, request: PageRequest) -> PageRead:
        """One later page of a replay."""
        try:
            async with self._in_flight:
                keys = len(request.channels)
                client = self._route(request.channels[0])
                reply = await client.fcall_ro(FUNCTION, keys, *request.args(self._keys))
        except LINK_ERRORS as exc:
            raise BrokerUnavailable(f"redis unavailable: {exc}") from exc
        return PageRead.parse(request, reply)

    async def read(self, positions: Mapping[str, str]) -> Snapshot:
        """The sequence's head and each channel's entries after its position, atomically
        (a node catching up: bounded by the channels' retention, not paged)."""
        first = next(iter(positions), "")
        async with self._in_flight, self._route(first).pipeline(transaction=True) as pipe:
            self._queue_sequence(pipe, first)
            for channel, after in positions.items():
                key = self._keys.history(channel)
                pipe.exists(key)
                if EventId.parse(after) is not None:
                    pipe.xrange(key, min=f"({after}", max="+")
            results = await pipe.execute()
        head, now, gaps = _sequence(results)
        rest = iter(results[3:])
        history = {}
        for channel, after in positions.items():
            exists, position = bool(next(rest)), EventId.parse(after)
            entries = [] if position is None else [_decoded(item) for item in next(rest)]
            history[channel] = ChannelHistory.after(position, exists, entries)
        return Snapshot(head, now, self._ttl_ms, history, gaps)

    async def _transaction(self, channels: Sequence[str], request: PageRequest | None) -> list[Any]:
        # One MULTI/EXEC: the head and the page, so neither can miss a concurrent publish.
        first = channels[0] if channels else ""
        async with self._in_flight, self._route(first).pipeline(transaction=True) as pipe:
            self._queue_sequence(pipe, first)
            for channel in channels:
                pipe.exists(self._keys.history(channel))
            if request is not None:
                pipe.fcall_ro(FUNCTION, len(request.channels), *request.args(self._keys))
            return list(await pipe.execute())

    def _queue_sequence(self, pipe: Pipeline, channel: str) -> None:
        """The head, clock and gaps of `channel`'s sequence (the one sequence, on a single
        Redis)."""
        pipe.hmget(self._keys.meta(channel), ["ms", "seq", "epoch"])
        pipe.time()
        pipe.lrange(self._keys.gaps(channel), 0, -1)


def _sequence(results: Sequence[Any]) -> tuple[Head | None, int, tuple[Gap, ...]]:
    """The head, Redis's clock (ms) and the failover gaps, from the first three replies."""
    (ms, seq, epoch), (seconds, micros), gaps = results[0], results[1], results[2]
    head = None if seq is None else Head(EventId(int(ms), int(seq)), int(epoch))
    found = (Gap.parse(raw.decode() if isinstance(raw, bytes) else raw) for raw in gaps)
    return head, seconds * 1000 + micros // 1000, tuple(gap for gap in found if gap)


def _decoded(item: tuple[bytes, dict[bytes, bytes]]) -> Entry:
    raw_id, fields = item
    text = [value.decode("utf-8", "replace") for value in (raw_id, *_fields(fields))]
    return entry_of(*text, closes=b"c" in fields)


def _fields(fields: dict[bytes, bytes]) -> list[bytes]:
    return [fields.get(name, b"") for name in (b"p", b"e", b"d")]
