"""Three `broadcaster serve` processes on a real Redis Cluster (3 primaries, 3 replicas,
made by `redis-cli --cluster create`): every publish path, sharded subscriptions, and
resume on another node within one group and across the three shards."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from contextlib import AsyncExitStack

import aiohttp
import orjson
import pytest

from broadcaster import RedisPublisher, SyncRedisPublisher
from tests.e2e.test_cluster import cli_publish
from tests.support.client import Subscriber, subscribe
from tests.support.processes import Node
from tests.support.publish import TOKEN, publish
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.sse import Event
from tests.support.wait import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
def nodes(clean_redis_cluster: RedisClusterGroup, start_node: Callable[..., Node]) -> list[Node]:
    return [
        start_node(clean_redis_cluster.url, publish_token=TOKEN, retry_ms="200") for _ in range(3)
    ]


def cli_c(cluster: RedisClusterGroup, *args: str) -> str:
    """`redis-cli -c` against the cluster's first node (it follows MOVED)."""
    port = str(cluster.servers[0].port)
    return subprocess.run(
        ["redis-cli", "-c", "-p", port, *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def shard_subscribers(cluster: RedisClusterGroup, channel: str) -> int:
    """PUBSUB SHARDNUMSUB of `channel`'s durable shard channel, on the shard that owns it."""
    tag = channel[1 : channel.index("}")] if "{" in channel else channel
    name = f"sse:{{{tag}}}:#{channel}"
    return int(cluster.owner(channel).cli("PUBSUB", "SHARDNUMSUB", name).split()[1])


async def test_every_publish_path_reaches_clients_on_every_node_and_shard(
    nodes: list[Node], clean_redis_cluster: RedisClusterGroup, session: aiohttp.ClientSession
) -> None:
    cluster = clean_redis_cluster
    channels = list(cluster.channels_by_primary().values())  # one on each shard
    publisher = SyncRedisPublisher.from_url(cluster.url)
    async with AsyncExitStack() as stack:
        subs: dict[str, list[Subscriber]] = {
            channel: [
                await stack.enter_async_context(subscribe(session, node.url, [channel]))
                for node in nodes
            ]
            for channel in channels
        }
        for channel in channels:
            assert shard_subscribers(cluster, channel) == 3, "one per node"
            group = channel[1 : channel.index("}")]
            cli_c(cluster, "SPUBLISH", f"sse:{{{group}}}:{channel}", "raw text")
            fcall_id = cli_c(cluster, "FCALL", "sse_publish", "1", channel, "from redis-cli")
            http_id = await publish(session, nodes[1].url, channel, "over http")
            code, cli_id, err = await cli_publish(
                channel, "from the cli", "--event", "note", BROADCASTER_REDIS_URL=cluster.url
            )
            assert code == 0, err
            python_id = await asyncio.to_thread(publisher.publish, channel, "from python")
            expected = [
                Event("raw text"),
                Event("from redis-cli", "message", fcall_id),
                Event("over http", "message", http_id),
                Event("from the cli", "note", cli_id),
                Event("from python", "message", python_id),
            ]
            for sub in subs[channel]:
                assert await sub.wait_for(5) == expected
    publisher.close()

    async def none_left() -> bool:
        return all(shard_subscribers(cluster, channel) == 0 for channel in channels)

    await eventually(none_left, 10, "each node's subscriptions to go with its clients")


async def test_resume_on_another_node_within_a_group_and_across_shards(
    nodes: list[Node], clean_redis_cluster: RedisClusterGroup, session: aiohttp.ClientSession
) -> None:
    cluster = clean_redis_cluster
    spread = list(cluster.channels_by_primary().values())  # three groups, three shards
    tagged = ["{room}chat", "{room}typing"]  # one group: plain ids
    for channels in (tagged, spread):
        async with subscribe(session, nodes[0].url, channels) as first:
            sent = [
                await publish(session, nodes[2].url, channels[n % len(channels)], f"m{n}")
                for n in range(6)
            ]
            events = await first.wait_for(6)
            live = [e.data for e in events]
            if channels is tagged:
                assert live == [f"m{n}" for n in range(6)]  # one group: one order
            else:
                # Live, each group comes in its order; different groups (shards, links)
                # in the order the node reads them, which a loaded node may swap.
                assert sorted(live) == [f"m{n}" for n in range(6)]
                for first_of in range(len(channels)):
                    mine = [f"m{n}" for n in range(first_of, 6, len(channels))]
                    assert [d for d in live if d in mine] == mine
            held = first.parser.last_event_id
        if channels is tagged:
            assert [e.id for e in events] == sent, "one group: today's ids"
        else:
            assert "~" in held and held.count("_") == 2, held
        for n in range(9):  # (ids of different groups may tie: each group has its own)
            await publish(session, nodes[1].url, channels[n % len(channels)], f"n{n}")
        async with subscribe(session, nodes[1].url, channels, {"Last-Event-ID": held}) as back:
            again = await back.wait_for(9)
            by_channel = [e.data for e in again]
            assert sorted(by_channel) == sorted(f"n{n}" for n in range(9)), "none lost or twice"
            for channel in channels:  # each group in its order
                mine = [f"n{n}" for n in range(9) if channels[n % len(channels)] == channel]
                assert [d for d in by_channel if d in mine] == mine
            # The stream goes on live after its replay, exactly once.
            await publish(session, nodes[2].url, channels[0], "live")
            assert [e.data for e in await back.wait_for(10)][9:] == ["live"]
            resumed_at = back.parser.last_event_id
        # From the last id, nothing more to replay.
        async with subscribe(
            session, nodes[2].url, channels, {"Last-Event-ID": resumed_at}
        ) as caught:
            await publish(session, nodes[0].url, channels[-1], "after")
            assert [e.data for e in await caught.wait_for(1)] == ["after"]


@pytest.mark.parametrize(
    ("given", "reason"),
    [("nonsense", "malformed"), ("1-1_2-2_3-3~00000000", "unknown"), ("5-5", "malformed")],
)
async def test_a_bad_composite_id_resets_and_streams_on(
    nodes: list[Node],
    clean_redis_cluster: RedisClusterGroup,
    session: aiohttp.ClientSession,
    given: str,
    reason: str,
) -> None:
    channels = list(clean_redis_cluster.channels_by_primary().values())
    await publish(session, nodes[0].url, channels[0], "before")
    async with subscribe(session, nodes[0].url, channels, {"Last-Event-ID": given}) as sub:
        [reset] = await sub.wait_for(1)
        assert reset.event == "reset"
        assert orjson.loads(reset.data) == {"channels": channels, "reason": reason}
        await publish(session, nodes[1].url, channels[2], "live")
        events = await sub.wait_for(2)
        assert events[1].data == "live" and "~" in events[1].id


async def test_a_replay_across_shards_during_a_publish_storm_is_exact(
    nodes: list[Node], clean_redis_cluster: RedisClusterGroup, session: aiohttp.ClientSession
) -> None:
    channels = [*clean_redis_cluster.channels_by_primary().values(), "{room}chat"]
    publisher = RedisPublisher.from_url(clean_redis_cluster.url)
    sent: dict[str, list[str]] = {channel: [] for channel in channels}

    async def burst(start: int, count: int) -> None:
        for n in range(start, start + count):
            channel = channels[n % len(channels)]
            await publisher.publish(channel, f"{channel}|{n}")
            sent[channel].append(f"{channel}|{n}")

    await burst(0, 40)
    async with subscribe(session, nodes[0].url, channels) as first:
        await first.wait_for(0)
        await burst(40, 8)
        await first.wait_for(8)
        held = first.parser.last_event_id
    await burst(48, 400)  # history to replay
    storm = asyncio.create_task(burst(448, 400))  # and more while it is replayed
    async with subscribe(session, nodes[1].url, channels, {"Last-Event-ID": held}) as back:
        await storm
        await back.wait_for(800)
        got = [event.data for event in back.events]
    await publisher.aclose()
    assert all(event.event == "message" for event in back.events)
    for channel in channels:
        mine = [data for data in got if data.startswith(f"{channel}|")]
        assert mine == [d for d in sent[channel] if int(d.rpartition("|")[2]) >= 48], channel
