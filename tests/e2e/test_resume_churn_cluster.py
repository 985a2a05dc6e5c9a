"""Exactly once under churn on a Redis Cluster: two nodes on a 3-primary, 3-replica
cluster, a steady stream of publishes on channels of two groups (one tagged pair, one
untagged channel, on different shards), clients that keep reconnecting to a random node
with their `Last-Event-ID` (plain within one group, composite across two), and the
nodes' links to a random shard killed every few hundred ms.

Every client's events, across all its connections, are exactly its channels' history,
group by group: every message once, in its group's order, no `reset`.
"""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest

from broadcaster import RedisPublisher
from broadcaster.core.channels import group_of
from tests.support.client import subscribe
from tests.support.nodes import StartNode
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.sse import Event

pytestmark = pytest.mark.slow

CLIENTS = 16
CHURN_SECONDS = 10.0
PUBLISH_EVERY = 0.004  # about 250 publishes a second


class Client:
    """One reconnecting client: what it follows, and every event it got."""

    def __init__(self, number: int, channels: list[str]) -> None:
        self.rng = random.Random(number)
        self.channels = sorted(self.rng.sample(channels, self.rng.choice([1, 2])))
        self.events: list[Event] = []
        self.position = ""

    async def visit(self, session: aiohttp.ClientSession, base: str, dwell: float) -> None:
        """One connection: resume from the position, stay `dwell` seconds, leave."""
        headers = {"Last-Event-ID": self.position} if self.position else None
        query = {"lastEventId": "earliest"}
        async with subscribe(session, base, self.channels, headers, query) as sub:
            await asyncio.sleep(dwell)  # (how long a user stays: the workload, not a wait)
        self.events += sub.events
        self.position = sub.parser.last_event_id or self.position

    def has(self, newest: set[str]) -> bool:
        return newest <= {event.data for event in self.events}


async def test_clients_resuming_through_shard_link_kills_get_every_message_once(
    clean_redis_cluster: RedisClusterGroup, start_node: StartNode
) -> None:
    cluster = clean_redis_cluster
    untagged = next(  # an untagged channel on another shard than the pair
        f"u{n}" for n in range(1000) if cluster.owner(f"u{n}") is not cluster.owner("{g}a")
    )
    channels = ["{g}a", "{g}b", untagged]
    truth: dict[str, list[str]] = {channel: [] for channel in channels}
    settings = {"history_maxlen": "100000", "retry_ms": "0"}
    nodes = [await asyncio.to_thread(start_node, cluster.url, **settings) for _ in range(2)]
    clients = [Client(n, channels) for n in range(CLIENTS)]
    churning = asyncio.Event()
    churning.set()

    async def publish() -> None:
        rng = random.Random(1)
        async with RedisPublisher.from_url(cluster.url) as publisher:
            n = 0
            while churning.is_set():
                channel = rng.choice(channels)
                data = f"{channel}|{n}"
                await publisher.publish(channel, data)
                truth[channel].append(data)
                n += 1
                await asyncio.sleep(PUBLISH_EVERY)  # (the publish rate)

    async def kill_links() -> None:
        rng = random.Random(2)
        kills = 0
        while churning.is_set():
            await asyncio.sleep(rng.uniform(0.1, 0.3))  # (the fault's rhythm)
            shard = rng.choice(cluster.primaries())
            await asyncio.to_thread(shard.cli, "CLIENT", "KILL", "TYPE", "pubsub")
            kills += 1
        assert kills > 10

    async def reconnect(client: Client, session: aiohttp.ClientSession) -> None:
        while churning.is_set():
            node = client.rng.choice(nodes)
            await client.visit(session, node.url, client.rng.uniform(0.01, 0.3))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        work = [
            asyncio.create_task(publish()),
            asyncio.create_task(kill_links()),
            *(asyncio.create_task(reconnect(client, session)) for client in clients),
        ]
        await asyncio.sleep(CHURN_SECONDS)  # (how long the churn lasts)
        churning.clear()
        await asyncio.gather(*work)
        for client in clients:
            newest = {truth[c][-1] for c in client.channels if truth[c]}
            for _ in range(60):  # resume until it has its channels' newest messages
                if client.has(newest):
                    break
                await client.visit(session, nodes[0].url, 0.5)
            assert client.has(newest), f"{client.channels} never caught up"

    assert sum(len(sent) for sent in truth.values()) > 1000
    for client in clients:
        assert not [e for e in client.events if e.event == "reset"], client.channels
        for group in {group_of(channel) for channel in client.channels}:
            mine = [c for c in client.channels if group_of(c) == group]
            want = _in_order(truth, mine)
            got = [e.data for e in client.events if group_of(e.data.partition("|")[0]) == group]
            assert got == want, (
                f"client of {client.channels}, group {group}: "
                f"{len(got) - len(set(got))} duplicates, {len(set(want) - set(got))} missing"
            )


def _in_order(truth: dict[str, list[str]], channels: list[str]) -> list[str]:
    """The messages of `channels` (of one group) in publish order (their numbers)."""
    return sorted((d for c in channels for d in truth[c]), key=lambda d: int(d.rpartition("|")[2]))
