"""Sharded subscriptions on a Redis Cluster: one pub/sub link per shard primary.

Each channel is subscribed (SSUBSCRIBE) on the link of the primary that serves its
group's slot, as redis-py's slot map says. Each link has a session of its own that
reconnects with a backoff. When a link goes, or Redis tells that a slot moved (an
unrequested `sunsubscribe`), the channels it carried are handed to `on_lost`, the slot
map is read again, and they are subscribed where their slots live now: `on_subscribed`
tells when each is back. `on_connected` is given a client of each primary a link
(re)connects to, before it subscribes anything there. Ordering and backfill are the
caller's (a sequencer per group).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from broadcaster.brokers.redis.client import LINK_ERRORS
from broadcaster.brokers.redis.link import Ack, Pong, PubSubLink
from broadcaster.brokers.redis.primaries import primary_of
from broadcaster.brokers.redis.redis_internals import refresh_slots

log = logging.getLogger(__name__)

REROUTE_DELAY = 0.05  # seconds between two readings of the slot map
Address = tuple[str, int]
Connect = Callable[[str, int], aioredis.Redis]
"""A client for the cluster node at host and port (with the cluster's credentials)."""


@dataclass(slots=True)
class LinkCounts:
    """What happened to the link to one primary (for metrics; kept after it is gone)."""

    reconnects: int = 0
    """Sessions that began after the link was lost."""
    sunsubscribes: int = 0
    """Subscriptions Redis dropped or refused there: a moved slot (an unrequested
    `sunsubscribe`), or a MOVED answer."""


@dataclass(frozen=True, slots=True)
class LinkState:
    """One primary's link, as metrics show it."""

    address: str
    connected: bool
    counts: LinkCounts


@dataclass(eq=False)
class _Shard:
    """One primary: its link, the channels routed to it, and its session."""

    address: Address
    link: PubSubLink
    channels: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    down: bool = False  # its link went, and is not back yet


class Shards:
    """Routes each subscribed channel to the link of its shard primary."""

    def __init__(
        self,
        cluster: aioredis.RedisCluster,
        connect: Connect,
        prefix: str,
        *,
        ping_interval: float,
        on_message: Callable[[str, bytes, bool], None],
        on_subscribed: Callable[[str], None],
        on_lost: Callable[[set[str]], None],
        on_connected: Callable[[aioredis.Redis], Awaitable[None]] | None = None,
        max_backoff: float = 5.0,
    ) -> None:
        self._cluster = cluster
        self._connect = connect
        self._prefix = prefix
        self._ping_interval = ping_interval
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._on_lost = on_lost
        self._on_connected = on_connected
        self._max_backoff = max_backoff
        self._shards: dict[Address, _Shard] = {}
        self._counts: dict[Address, LinkCounts] = {}
        self._routes: dict[str, _Shard] = {}
        self._rerouting: asyncio.Task[None] | None = None
        # Channels to route again, each with whether Redis dropped its subscription (a
        # moved slot: subscribe it again even where it was); else its link went (the
        # link subscribes it again when it is back, if its slot is still there).
        self._moved: dict[str, bool] = {}
        # Subscribed while their link was down: answered once it is up and subscribes
        # them (or goes again).
        self._waiting: dict[str, list[Ack]] = {}

    def subscribe(self, channel: str, done: Ack | None = None) -> None:
        """SSUBSCRIBE `channel` on its shard's link; `done` resolves on its answer (or
        when that link goes first)."""
        shard = self._shard_of(channel)
        shard.channels.add(channel)
        self._routes[channel] = shard
        if shard.link.live:
            shard.link.subscribe(channel, done)
        elif done is not None:
            self._waiting.setdefault(channel, []).append(done)

    def unsubscribe(self, channel: str) -> None:
        """SUNSUBSCRIBE `channel`."""
        shard = self._routes.pop(channel, None)
        if shard is None:
            return
        shard.channels.discard(channel)
        if shard.link.live:
            shard.link.unsubscribe(channel)

    def fence(self, channel: str) -> Pong:
        """A PING on `channel`'s link: True once every message published on it before has
        been read (False if the link went first, or the channel is not routed)."""
        shard = self._routes.get(channel)
        if shard is None or not shard.link.live:
            done: Pong = asyncio.get_running_loop().create_future()
            done.set_result(False)
            return done
        return shard.link.fence()

    async def fence_all(self, channels: Iterable[str]) -> bool:
        """A PING on each link that carries one of `channels`: True once every one has
        answered (False if one went first, or none of them is routed)."""
        links = {id(shard.link): shard.link for shard in map(self._routes.get, channels) if shard}
        if not links or not all(link.live for link in links.values()):
            return False
        return all(await asyncio.gather(*(link.fence() for link in links.values())))

    @property
    def reachable(self) -> bool:
        """Whether some link is up, or none has gone down (the first are connecting)."""
        shards = self._shards.values()
        return any(shard.link.live for shard in shards) or not any(s.down for s in shards)

    def links(self) -> list[LinkState]:
        """Every primary this node has had a link to: whether it is up, and its counts."""
        return [
            LinkState(f"{host}:{port}", (host, port) in self._shards and self._live(host, port), c)
            for (host, port), c in sorted(self._counts.items())
        ]

    def _live(self, host: str, port: int) -> bool:
        return self._shards[(host, port)].link.live

    def live(self, channel: str) -> bool:
        """Whether `channel`'s link is up."""
        shard = self._routes.get(channel)
        return shard is not None and shard.link.live

    async def close(self) -> None:
        """Stop every session, and close every link."""
        tasks = [s.task for s in self._shards.values() if s.task is not None]
        if self._rerouting is not None:
            tasks.append(self._rerouting)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for shard in self._shards.values():
            shard.link.close()

    def _shard_of(self, channel: str) -> _Shard:
        address = primary_of(self._cluster, channel)
        shard = self._shards.get(address)
        if shard is None:
            link = PubSubLink(
                self._prefix,
                ping_interval=self._ping_interval,
                on_message=self._on_message,
                on_subscribed=self._subscribed,
                sharded=True,
                on_moved=lambda channel: self._moved_away(channel, address),
            )
            shard = self._shards[address] = _Shard(address, link)
            self._counts.setdefault(address, LinkCounts())
            shard.task = asyncio.create_task(self._session(shard), name=f"shard-{address[1]}")
        return shard

    async def _session(self, shard: _Shard) -> None:
        backoff = 0.05
        client = self._connect(*shard.address)
        try:
            while True:
                conn = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
                conn.retry = Retry(NoBackoff(), 0)  # this loop owns retries and backoff
                try:
                    await conn.connect()
                    if self._on_connected is not None:
                        await self._on_connected(client)  # (a primary new to this node)
                    backoff = 0.05
                    if shard.down:
                        self._counts[shard.address].reconnects += 1
                    shard.down = False
                    shard.link.open(shard.channels)
                    await shard.link.run(conn, lambda: None)
                except LINK_ERRORS as exc:
                    log.warning("shard %s:%d lost: %s", *shard.address, exc)
                finally:
                    shard.link.close()
                    await conn.disconnect(nowait=True)
                self._lost(shard)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self._max_backoff)
                if not shard.channels and self._rerouting is not None:
                    await asyncio.shield(self._rerouting)  # (it may route some back)
                if not shard.channels:
                    # Its slots are served elsewhere now (a failover): nothing to keep.
                    del self._shards[shard.address]
                    return
        finally:
            await client.aclose()

    def _subscribed(self, channel: str) -> None:
        self._answer(channel)
        self._on_subscribed(channel)

    def _answer(self, channel: str) -> None:
        for done in self._waiting.pop(channel, ()):
            if not done.done():
                done.set_result(None)

    def _lost(self, shard: _Shard) -> None:
        """The link went: its channels may have missed messages, and may be served by
        another primary now (a failover)."""
        shard.down = True
        for channel in shard.channels:
            self._answer(channel)
        if shard.channels:
            self._on_lost(set(shard.channels))
            for channel in shard.channels:
                self._moved.setdefault(channel, False)
            self._reroute()

    def _moved_away(self, channel: str, address: Address) -> None:
        self._counts[address].sunsubscribes += 1
        if self._routes.get(channel) is None:
            return  # unsubscribed meanwhile
        self._on_lost({channel})
        self._moved[channel] = True
        self._reroute()

    def _reroute(self) -> None:
        if self._rerouting is None or self._rerouting.done():
            self._rerouting = asyncio.create_task(self._read_slots(), name="shard-slots")

    async def _read_slots(self) -> None:
        """Read the slot map again, and subscribe each moved channel where it lives now.
        (A node that has not yet heard of the move answers MOVED, and round it goes:
        at most once per `REROUTE_DELAY`, until the cluster agrees.)"""
        delay = REROUTE_DELAY
        while self._moved:
            await asyncio.sleep(REROUTE_DELAY)
            try:
                await refresh_slots(self._cluster)
            except LINK_ERRORS as exc:
                log.warning("cannot read the cluster's slot map, retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            moved, self._moved = self._moved, {}
            for channel, dropped in moved.items():
                old = self._routes.get(channel)
                if old is None:
                    continue  # unsubscribed meanwhile
                new = self._shard_of(channel)
                if new is old:
                    if dropped and old.link.live:
                        old.link.subscribe(channel)
                    continue  # (a link coming back subscribes its channels itself)
                # Served elsewhere now: the old link no longer hears it (Redis dropped
                # it, or that link is gone).
                old.channels.discard(channel)
                self.subscribe(channel)
