"""Sharded subscriptions on a real Redis Cluster: each channel on the link of its shard
primary, one subscription per shard, and channels that follow their slot when it moves
and come back when their link is lost."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from broadcaster.brokers.redis.client import OPTIONS
from broadcaster.brokers.redis.shards import Shards
from tests.support.processes import RedisServer, replicas_online
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow


@dataclass
class Heard:
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    subscribed: list[str] = field(default_factory=list)
    lost: list[set[str]] = field(default_factory=list)


@pytest.fixture
async def shards(redis_cluster: RedisClusterGroup) -> AsyncIterator[tuple[Shards, Heard]]:
    heard = Heard()
    port = redis_cluster.servers[0].port
    cluster = aioredis.RedisCluster(host="127.0.0.1", port=port, **OPTIONS)
    await cluster.initialize()
    subscriptions = Shards(
        cluster,
        lambda host, port: aioredis.Redis(host=host, port=port, **OPTIONS),
        "sse:",
        ping_interval=5,
        on_message=lambda *message: heard.messages.append(message),
        on_subscribed=heard.subscribed.append,
        on_lost=heard.lost.append,
    )
    yield subscriptions, heard
    await subscriptions.close()
    await cluster.aclose()


def spublish(server: RedisServer, channel: str, data: str) -> None:
    group = channel[1 : channel.index("}")]
    server.cli("SPUBLISH", f"sse:{{{group}}}:{channel}", data)


async def subscribed(subscriptions: Shards, channel: str) -> None:
    done = asyncio.get_running_loop().create_future()
    subscriptions.subscribe(channel, done)
    await done


async def test_each_channel_is_subscribed_on_its_shard_and_hears_it(
    redis_cluster: RedisClusterGroup, shards: tuple[Shards, Heard]
) -> None:
    subscriptions, heard = shards
    channels = redis_cluster.channels_by_primary()
    for channel in channels.values():
        await subscribed(subscriptions, channel)
    for port, channel in channels.items():
        owner = next(s for s in redis_cluster.servers if s.port == port)
        name = f"sse:{channel[: channel.index('}') + 1]}:#{channel}"
        assert owner.cli("PUBSUB", "SHARDNUMSUB", name).split()[-1] == "1"
        spublish(owner, channel, f"to {port}")
    await wait_until(lambda: len(heard.messages) == 3, 10, "a message from every shard")
    assert sorted(heard.messages) == sorted(
        (channel, f"to {port}".encode(), False) for port, channel in channels.items()
    )


async def test_a_channel_follows_its_slot_and_a_lost_link_comes_back(
    redis_cluster: RedisClusterGroup, shards: tuple[Shards, Heard]
) -> None:
    subscriptions, heard = shards
    channels = redis_cluster.channels_by_primary()
    (first, mover), (_, stayer), (third, _) = channels.items()
    for channel in (mover, stayer):
        await subscribed(subscriptions, channel)
    old = next(s for s in redis_cluster.servers if s.port == first)
    new = next(s for s in redis_cluster.servers if s.port == third)
    redis_cluster.move_slot(redis_cluster.slot(mover), new)
    await wait_until(lambda: heard.subscribed.count(mover) == 2, 10, "the move")
    assert {mover} in heard.lost
    assert await subscriptions.fence(mover)
    spublish(new, mover, "after the move")
    await wait_until(lambda: (mover, b"after the move", False) in heard.messages, 10, "it")
    assert old.cli("PUBSUB", "SHARDNUMSUB", f"sse:{mover[:4]}:#{mover}").split()[-1] == "0"

    # A lost link: its channels are told lost, and subscribed again once it is back.
    owner = redis_cluster.owner(stayer)
    owner.cli("CLIENT", "KILL", "TYPE", "pubsub")
    await wait_until(lambda: heard.subscribed.count(stayer) == 2, 10, "the reconnect")
    assert {stayer} in heard.lost
    spublish(owner, stayer, "after the reconnect")
    await wait_until(lambda: (stayer, b"after the reconnect", False) in heard.messages, 10, "it")


async def test_channels_follow_their_shard_to_its_promoted_replica(
    redis_cluster: RedisClusterGroup, shards: tuple[Shards, Heard]
) -> None:
    subscriptions, heard = shards
    primaries = redis_cluster.primaries()
    await wait_until(lambda: all(map(replicas_online, primaries)), 10, "the replicas to sync")
    channels = redis_cluster.channels_by_primary()
    for channel in channels.values():
        await subscribed(subscriptions, channel)
    port, doomed = next(iter(channels.items()))
    dead = next(s for s in redis_cluster.servers if s.port == port)
    dead.kill()  # its replica is promoted after the cluster's node timeout (2 s)

    def promoted() -> bool:
        try:
            return redis_cluster.owner(doomed).port != port
        except (AssertionError, subprocess.CalledProcessError):
            return False

    await wait_until(promoted, 30, "the replica's promotion")
    await wait_until(lambda: heard.subscribed.count(doomed) == 2, 30, "the channel, moved")
    assert {doomed} in heard.lost
    new = redis_cluster.owner(doomed)
    spublish(new, doomed, "after the failover")
    await wait_until(lambda: (doomed, b"after the failover", False) in heard.messages, 10, "it")
