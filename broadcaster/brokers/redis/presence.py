"""Presence in Redis: each node process's subscriber counts and identified subscribers
per channel, its liveness, and the sweep of dead processes (`PresenceStore`)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from broadcaster.brokers.protocol import BrokerUnavailable
from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.brokers.redis.seats import Seats
from broadcaster.core.identity import Attendee, AttendeePage

T = TypeVar("T")

ALIVE_MS = 5_000
"""How long a process counts as alive after its last refresh: the bound within which a
dead node's subscribers vanish from every count."""
EXPIRE_S = 86_400
"""A channel's keys expire this long after their last write (a forgotten channel goes);
a process writes its nonzero counts again well within it."""
BATCH = 1_000
"""Channels per pipeline when a process writes many counts at once."""
_SOURCE = resources.files(__package__).joinpath("presence.lua").read_text("utf-8")


class RedisPresence:
    """Counts in `<prefix>presence:<channel>` (a hash: field = process id, value = its
    count), identified subscribers in `<prefix>who:<channel>` (`presence.lua`), liveness
    in `<prefix>alive:<process>` (a key that expires `alive_ms` after the last refresh),
    the processes that ever told in `<prefix>processes`, and each one's channels in
    `<prefix>owned:<process>`. On a Redis Cluster a channel's keys lie in its group's slot
    (`KeySpace`).

    A write touches only the channels given (one pipeline round trip per `BATCH`); a read
    of counts is two round trips (HGETALL of each channel, one MGET of the liveness of
    every process named) and removes the fields of processes no longer alive. A process
    that lapsed (Redis out of reach past the bound) takes a new name: what it wrote under
    the old one is a dead process's, swept, never mixed with what it writes next.
    """

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        keys: KeySpace,
        name: str,
        *,
        announces: Callable[[str], bool] | None = None,
        alive_ms: int = ALIVE_MS,
        expire_s: int = EXPIRE_S,
    ) -> None:
        self._client = client
        self._keys = keys
        self._name = name
        self._process = f"{name}:{secrets.token_hex(3)}"
        self._announces = announces
        self._alive_ms = alive_ms
        self._expire_s = expire_s
        self._registered = False  # it has told the store it is alive once
        self._owned: set[str] = set()  # channels in its `owned` set
        self._seats = Seats(keys, self._process, announces, expire_s)

    @property
    def process(self) -> str:
        """This process's field in every count hash (new after a lapse)."""
        return self._process

    @property
    def bound(self) -> float:
        """Seconds after its last refresh within which a dead process's counts vanish."""
        return self._alive_ms / 1000

    async def load(self) -> None:
        """Load `presence.lua` (again: a node of a newer release replaces it)."""
        await self._call(self._client.function_load(_SOURCE, replace=True))

    async def refresh(self) -> bool:
        """SET the liveness key with its expiry, GET the old value: none means new or
        lapsed (then under a new name). New or lapsed, it loads `presence.lua` too (a
        Redis that lost this key may have lost the library: a restart without
        persistence)."""
        old = await self._call(
            self._client.set(self._keys.alive(self._process), "1", px=self._alive_ms, get=True)
        )
        if old is not None:
            return True
        if self._registered:
            self._renew()
            await self._call(
                self._client.set(self._keys.alive(self._process), "1", px=self._alive_ms)
            )
        await self._call(self._client.sadd(self._keys.processes(), self._process))
        await self.load()
        self._registered = True
        return False

    def _renew(self) -> None:
        self._process = f"{self._name}:{secrets.token_hex(3)}"
        self._owned = set()
        self._seats = Seats(self._keys, self._process, self._announces, self._expire_s)

    async def write(
        self,
        counts: Mapping[str, int],
        seats: Mapping[tuple[str, str], Attendee | None] | None = None,
    ) -> None:
        """Set this process's count of each channel (0 removes it), and its seat of each
        (channel, sub) (None removes it), in pipelines of BATCH channels."""
        seats = seats or {}
        calls = self._seats.calls(seats)
        # The channels this process has subscribers on (a sweep of it cleans those).
        seated = {channel for (channel, _), seat in seats.items() if seat is not None}
        joined = {c for c, n in counts.items() if n > 0} | seated
        left = {c for c, n in counts.items() if n <= 0} - seated
        joined, left = joined - self._owned, left & self._owned
        owned = self._keys.owned(self._process)
        items = list(counts.items())
        for start in range(0, max(len(items), len(calls), 1), BATCH):
            pipe = self._client.pipeline(transaction=False)
            if start == 0 and joined:
                pipe.sadd(owned, *sorted(joined))
                pipe.expire(owned, self._expire_s)
            if start == 0 and left:
                pipe.srem(owned, *sorted(left))
            for channel, count in items[start : start + BATCH]:
                key = self._keys.presence(channel)
                if count > 0:
                    pipe.hset(key, self._process, count)
                    pipe.expire(key, self._expire_s)
                else:
                    pipe.hdel(key, self._process)
            for call in calls[start : start + BATCH]:
                pipe.fcall(*call)
            await self._run(pipe)
            if start == 0:
                self._owned |= joined
                self._owned -= left
        self._seats.written(seats)

    async def read(self, channels: Sequence[str]) -> dict[str, int]:
        """Sum each channel's fields of live processes; drop the fields of dead ones."""
        pipe = self._client.pipeline(transaction=False)
        for channel in channels:
            pipe.hgetall(self._keys.presence(channel))
        hashes: list[dict[bytes, bytes]] = await self._run(pipe)
        alive = await self._alive({field for fields in hashes for field in fields})
        counts: dict[str, int] = {}
        dead: dict[str, list[bytes]] = {}
        for channel, fields in zip(channels, hashes, strict=True):
            counts[channel] = sum(int(v) for p, v in fields.items() if p in alive)
            gone = [p for p in fields if p not in alive]
            if gone:
                dead[channel] = gone
        if dead:
            # A process that lapsed but lives writes its counts again under a new name.
            pipe = self._client.pipeline(transaction=False)
            for channel, gone in dead.items():
                pipe.hdel(self._keys.presence(channel), *gone)
            await self._run(pipe)
        return counts

    async def attendees(self, channel: str, after: str | None, limit: int) -> AttendeePage:
        """A page of `channel`'s identified subscribers on live processes, by `sub`."""
        return await self._call(self._seats.page(self._client, channel, after, limit, self._alive))

    async def sweep(self) -> int:
        """Clean up after every process that died (its liveness expired): its counts and
        seats go, with a `leave` for each subscriber it was the last seat of. One node
        takes each dead process (SREM answers 1 to one caller). The processes swept."""
        members: set[bytes] = await self._call(self._client.smembers(self._keys.processes()))  # type: ignore[arg-type]
        named = sorted(members)
        if not named:
            return 0
        alive = await self._alive(set(named))
        swept = 0
        for process in (p.decode() for p in named if p not in alive):
            if not await self._call(self._client.srem(self._keys.processes(), process)):
                continue  # another node took it
            owned = self._keys.owned(process)
            listed: set[bytes] = await self._call(self._client.smembers(owned))  # type: ignore[arg-type]
            channels = [channel.decode() for channel in listed]
            for start in range(0, len(channels), BATCH):
                pipe = self._client.pipeline(transaction=False)
                for channel in channels[start : start + BATCH]:
                    pipe.hdel(self._keys.presence(channel), process)
                    pipe.fcall(*self._seats.gone(channel, process))
                await self._run(pipe)
            await self._call(self._client.delete(owned))
            swept += 1
        return swept

    async def remove(self, channels: Sequence[str]) -> None:
        """This process stops: drop its counts of `channels`, its seats (announcing the
        leaves), its liveness and its name."""
        await self.write(dict.fromkeys(channels, 0), self._seats.all_gone())
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(self._keys.alive(self._process), self._keys.owned(self._process))
        pipe.srem(self._keys.processes(), self._process)
        await self._run(pipe)

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()

    async def _alive(self, processes: set[bytes]) -> set[bytes]:
        """Which of `processes` are alive now (one MGET)."""
        named = sorted(processes)
        if not named:
            return set()
        flags = await self._call(self._client.mget([self._keys.alive(p.decode()) for p in named]))
        return {p for p, flag in zip(named, flags, strict=True) if flag is not None}

    async def _run(self, pipe: Any) -> list[Any]:
        result: list[Any] = await self._call(pipe.execute())
        return result

    @staticmethod
    async def _call(call: Awaitable[T]) -> T:
        try:
            return await call
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence: {exc}") from exc
