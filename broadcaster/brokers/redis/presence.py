"""Subscriber counts per channel in Redis, each node process its own field, summed over
the processes alive now (`PresenceStore`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from broadcaster.brokers.protocol import BrokerUnavailable
from broadcaster.brokers.redis.keys import KeySpace

ALIVE_MS = 5_000
"""How long a process counts as alive after its last refresh: the bound within which a
dead node's subscribers vanish from every count."""
EXPIRE_S = 86_400
"""A channel's count hash expires this long after its last write (a forgotten channel
goes); a process writes its nonzero counts again well within it."""
BATCH = 1_000
"""Channels per pipeline when a process writes many counts at once."""


class RedisPresence:
    """Counts in `<prefix>presence:<channel>` (a hash: field = process id, value = its
    count), liveness in `<prefix>alive:<process>` (a key that expires `alive_ms` after the
    last refresh). On a Redis Cluster the hashes lie in their channel's group slot and the
    liveness keys under the `{presence}` tag (`KeySpace`).

    A write touches only the channels given (one pipeline round trip per `BATCH`); a read
    is two round trips (HGETALL of each channel, one MGET of the liveness of every process
    named), and removes the fields of processes no longer alive.
    """

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        keys: KeySpace,
        process: str,
        *,
        alive_ms: int = ALIVE_MS,
        expire_s: int = EXPIRE_S,
    ) -> None:
        self._client = client
        self._keys = keys
        self._process = process
        self._alive_ms = alive_ms
        self._expire_s = expire_s

    @property
    def process(self) -> str:
        """This process's field in every count hash."""
        return self._process

    @property
    def bound(self) -> float:
        """Seconds after its last refresh within which a dead process's counts vanish."""
        return self._alive_ms / 1000

    async def refresh(self) -> bool:
        """SET the liveness key with its expiry, GET the old value: none means lapsed."""
        try:
            old = await self._client.set(
                self._keys.alive(self._process), "1", px=self._alive_ms, get=True
            )
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence: {exc}") from exc
        return old is not None

    async def write(self, counts: Mapping[str, int]) -> None:
        """HSET (and EXPIRE) each nonzero count, HDEL each zero, in pipelines of BATCH."""
        items = list(counts.items())
        try:
            for start in range(0, len(items), BATCH):
                pipe = self._client.pipeline(transaction=False)
                for channel, count in items[start : start + BATCH]:
                    key = self._keys.presence(channel)
                    if count > 0:
                        pipe.hset(key, self._process, count)
                        pipe.expire(key, self._expire_s)
                    else:
                        pipe.hdel(key, self._process)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence: {exc}") from exc

    async def read(self, channels: Sequence[str]) -> dict[str, int]:
        """Sum each channel's fields of live processes; drop the fields of dead ones."""
        try:
            pipe = self._client.pipeline(transaction=False)
            for channel in channels:
                pipe.hgetall(self._keys.presence(channel))
            hashes: list[dict[bytes, bytes]] = await pipe.execute()
            named = sorted({field for fields in hashes for field in fields})
            if not named:
                return dict.fromkeys(channels, 0)
            flags = await self._client.mget([self._keys.alive(p.decode()) for p in named])
            alive = {p for p, flag in zip(named, flags, strict=True) if flag is not None}
            counts: dict[str, int] = {}
            dead: dict[str, list[bytes]] = {}
            for channel, fields in zip(channels, hashes, strict=True):
                counts[channel] = sum(int(v) for p, v in fields.items() if p in alive)
                gone = [p for p in fields if p not in alive]
                if gone:
                    dead[channel] = gone
            if dead:
                # A process that lapsed but lives writes all its counts again on its
                # next refresh (`refresh` answers False), so removing is always safe.
                pipe = self._client.pipeline(transaction=False)
                for channel, gone in dead.items():
                    pipe.hdel(self._keys.presence(channel), *gone)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence: {exc}") from exc
        return counts

    async def remove(self, channels: Sequence[str]) -> None:
        """HDEL this process's field of `channels`, then DEL its liveness key."""
        await self.write(dict.fromkeys(channels, 0))
        try:
            await self._client.delete(self._keys.alive(self._process))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"presence: {exc}") from exc

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()
