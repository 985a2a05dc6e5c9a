"""The Redis Cluster broker: sharded pub/sub, and a sequence per group.

A node on a Redis Cluster holds a pub/sub link per shard primary (`shards.py`), a
sequencer per group of the channels its clients follow (`groups.py`), and a plain
client per primary for history reads (`primaries.py`, one MULTI per group). Publishing
goes through redis-py's cluster client, which follows the slot map. Everything a
single Redis guarantees holds per group: ids only grow, without a gap, across a lost
link, a moved slot or a shard's failover.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from functools import partial

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from broadcaster.brokers.config import DEFAULT_CONFIG, LibraryConfig
from broadcaster.brokers.protocol import BrokerUnavailable, Deliver
from broadcaster.brokers.redis.client import IN_FLIGHT, LINK_ERRORS, NodeClient, connect_cluster
from broadcaster.brokers.redis.groups import Group, GroupHistory, group_key
from broadcaster.brokers.redis.history import RedisHistory
from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.brokers.redis.library import Library, NotReplicated, missing
from broadcaster.brokers.redis.payloads import received
from broadcaster.brokers.redis.primaries import REDIRECTIONS, Primaries
from broadcaster.brokers.redis.publishing import publish
from broadcaster.brokers.redis.replays import SharedReplays
from broadcaster.brokers.redis.reports import SeenReports
from broadcaster.brokers.redis.sequencer import Sequencer
from broadcaster.brokers.redis.shards import LinkState, Shards
from broadcaster.core.channels import group_of
from broadcaster.core.history import Snapshot, Start, begin
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.metrics import Counts
from broadcaster.core.publication import Publication
from broadcaster.core.replay import Replay

log = logging.getLogger(__name__)

READ_ATTEMPTS = 3  # a replay read that meets redirections (a slot moving) tries again


class SpansGroups(ValueError):
    """A replay asked of channels of several groups (a composite id's business)."""


class ClusterBroker:
    """Subscribes this node's channels on the shards that serve them, and publishes
    through redis-py's cluster client."""

    def __init__(
        self,
        cluster: aioredis.RedisCluster,
        node: NodeClient,
        *,
        config: LibraryConfig = DEFAULT_CONFIG,
        max_replay_bytes: int = 4 * 1_048_576,
        ping_interval: float = 5.0,
        max_backoff: float = 5.0,
        counts: Counts | None = None,
    ) -> None:
        self._counts = counts or Counts()
        self._cluster = cluster
        self._library = Library(config)
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)
        self._primaries = Primaries(cluster, node)
        self._history = RedisHistory(
            self._primaries.client,
            keys=KeySpace(config.prefix, clustered=True),
            ttl=config.history_ttl,
            max_replay_bytes=max_replay_bytes,
            in_flight=self._in_flight,
        )
        self._shards = Shards(
            cluster,
            node,
            config.prefix,
            ping_interval=ping_interval,
            on_message=self._on_message,
            on_subscribed=self._on_subscribed,
            on_lost=self._on_lost,
            on_connected=self._on_primary,
            max_backoff=max_backoff,
        )
        self._max_backoff = max_backoff
        self._replays = SharedReplays(self._read_replay)
        self._groups: dict[str, Group] = {}
        self._routes: dict[str, Group] = {}  # each wanted channel's group
        self._deliver: Deliver | None = None
        self._ready = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        config: LibraryConfig = DEFAULT_CONFIG,
        max_replay_bytes: int = 4 * 1_048_576,
        counts: Counts | None = None,
    ) -> ClusterBroker:
        """A broker for the Redis Cluster at `url` (`redis+cluster://`)."""
        cluster, node = connect_cluster(url)
        return cls(cluster, node, config=config, max_replay_bytes=max_replay_bytes, counts=counts)

    @property
    def connected(self) -> bool:
        """Whether the cluster answered, and some shard link is up (or none is needed)."""
        return self._ready and self._shards.reachable

    async def start(self, deliver: Deliver) -> None:
        """Learn the slot map and load the function library on every primary; returns
        after the first attempt, successful or not (it goes on in the background)."""
        self._deliver = deliver
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._join(first), name="redis-cluster")
        await asyncio.wait([first, self._task], return_when=asyncio.FIRST_COMPLETED)

    async def close(self) -> None:
        """Stop every session and close every connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for group in self._groups.values():
            group.close()
            await group.reports.close()
        await self._shards.close()
        await self._primaries.close()
        await self._cluster.aclose()

    def links(self) -> list[LinkState]:
        """This node's link to each shard primary (for metrics)."""
        return self._shards.links()

    def group(self, channel: str) -> str:
        """The channel's `{tag}`, or the channel itself (`core/channels.group_of`)."""
        return group_of(channel)

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """SSUBSCRIBE `channel` on its shard; resolves when Redis confirms (after its
        group's head is read, for a group new to this node), or the link went first."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        group = self._routes.get(channel) or self._group(group_of(channel))
        self._routes[channel] = group
        group.channels.add(channel)

        def subscribe() -> None:
            self._shards.subscribe(channel, done)
            done.add_done_callback(lambda _: self._started(group, channel))

        group.when_open(subscribe)
        return done

    def unsubscribe(self, channel: str) -> None:
        """SUNSUBSCRIBE `channel`."""
        group = self._routes.pop(channel, None)
        if group is None:
            return
        group.channels.discard(channel)
        group.sequencer.forget(channel)
        group.forget_lost(channel)
        group.when_open(lambda: self._shards.unsubscribe(channel))
        if not group.channels and group.waiting is None:
            self._drop(group)

    async def publish(self, batch: Sequence[Publication]) -> list[str]:
        """Publish durably: each `FCALL sse_publish` on its channel's primary."""
        return await publish(self._library, self._cluster, self._in_flight, batch)

    async def closed(self, channels: Sequence[str]) -> dict[str, EventId]:
        """Which of `channels` are closed now, each with its closing message's id."""
        return await self._history.closed(channels)

    async def replay(self, channels: Sequence[str], start: Start) -> Replay:
        """What `channels` (of one group) replay from `start`, read atomically from the
        primary of their group (a read shared with whoever asks the same now)."""
        if len({group_of(channel) for channel in channels}) > 1:
            raise SpansGroups("these channels are in several groups: give them one {tag}")
        return await self._replays.replay(channels, start)

    def _group(self, name: str) -> Group:
        group = self._groups.get(name)
        if group is None:
            history = GroupHistory(self._history, self._primaries, name)
            reports = SeenReports(
                self._library, self._cluster, max_backoff=self._max_backoff, channel=group_key(name)
            )
            channels: set[str] = set()
            fence = partial(self._shards.fence_all, channels)
            sequencer = Sequencer(
                history,
                self._emit,
                fence,
                retry_errors=LINK_ERRORS,
                max_backoff=self._max_backoff,
                rejected=self._forged,
            )
            group = Group(
                name,
                sequencer,
                history,
                reports,
                fence,
                max_backoff=self._max_backoff,
                channels=channels,
            )
            self._groups[name] = group
            group.open()
        return group

    def _drop(self, group: Group) -> None:
        if self._groups.get(group.name) is group:
            del self._groups[group.name]
        group.close()

    def _started(self, group: Group, channel: str) -> None:
        if self._routes.get(channel) is group:  # (not left meanwhile)
            group.sequencer.started(channel)

    def _on_subscribed(self, channel: str) -> None:
        group = self._routes.get(channel)
        if group is not None:
            group.subscribed(channel)

    def _on_lost(self, channels: set[str]) -> None:
        by_group: dict[str, set[str]] = {}
        for channel in channels:
            group = self._routes.get(channel)
            if group is not None:
                by_group.setdefault(group.name, set()).add(channel)
        for name, lost in by_group.items():
            self._groups[name].lose(lost)

    def _on_message(self, channel: str, payload: bytes, durable: bool) -> None:
        group = self._routes.get(channel)
        if group is not None:
            message = received(channel, payload, durable, self._counts.malformed)
            if message is not None:
                group.sequencer.receive(channel, message)

    def _forged(self, channel: str, message: Message) -> None:
        self._counts.malformed["forged"] += 1

    def _emit(self, channel: str, message: Message) -> None:
        if self._deliver is not None:
            self._deliver(channel, message)

    async def _read_replay(self, channels: list[str], start: Start) -> Replay:
        try:
            snapshot = await self._snapshot(channels, start)
            result = begin(start, snapshot)
            group = self._groups.get(group_of(channels[0]))
            # As on a single Redis (`RedisBroker._read_replay`), on every link involved.
            fenced = await self._shards.fence_all(channels)
            result.caught_up = fenced and group is not None and not group.sequencer.holding
        except LINK_ERRORS as exc:
            raise BrokerUnavailable(f"redis unavailable: {exc}") from exc
        if result.head is not None and group is not None:
            local = [c for c in channels if self._routes.get(c) is group]
            group.sequencer.replayed(local, result.head, caught_up=result.caught_up)
        return result

    async def _snapshot(self, channels: list[str], start: Start) -> Snapshot:
        for attempt in range(READ_ATTEMPTS):
            try:
                return await self._history.snapshot(channels, start)
            except REDIRECTIONS:
                if attempt == READ_ATTEMPTS - 1:
                    raise
                await self._primaries.redirected()
            except ResponseError as exc:
                if not missing(exc) or attempt == READ_ATTEMPTS - 1:
                    raise
                await self._load_library()  # a primary that joined after the node started
        raise AssertionError("unreachable")

    async def _join(self, first: asyncio.Future[None]) -> None:
        backoff = 0.05
        while True:
            try:
                await self._cluster.initialize()
                await self._load_library()
                self._ready = True
                return
            except LINK_ERRORS as exc:
                log.warning("redis cluster unavailable, retrying with backoff: %s", exc)
            finally:
                if not first.done():
                    first.set_result(None)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._max_backoff)

    async def _on_primary(self, client: aioredis.Redis) -> None:
        """A shard link (re)connects to a primary, maybe one added since the node
        started: it gets the function library, unless it has it."""
        try:
            await self._library.load(client, replace=False)
        except (NotReplicated, ResponseError) as exc:
            log.warning("cannot load the function library on a shard: %s", exc)

    async def _load_library(self) -> None:
        try:
            await self._library.load(self._cluster, replace=True)
        except NotReplicated as exc:
            log.warning("cannot load the function library now: %s", exc)
