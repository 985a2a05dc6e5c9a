"""The local Redis Cluster that `broadcaster cluster` and the tests run: every slot served
by three primaries with a replica each, and sharded pub/sub inside the owning shard."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import redis

from broadcaster import RedisPublisher, SyncRedisPublisher
from broadcaster.brokers.config import LibraryConfig
from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.brokers.redis.library import NotReplicated
from broadcaster.cluster.redis_cluster import (
    cluster_info,
    cluster_options,
    cluster_port,
    create_cluster,
)
from broadcaster.core.ids import EventId
from tests.support.client import subscribe
from tests.support.nodes import StartApp
from tests.support.processes import RedisServer, replicas_online
from tests.support.publish import TOKEN, publish
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.sse import Event
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_cluster(clean_redis_cluster: RedisClusterGroup) -> RedisClusterGroup:
    """These tests leave the servers as they found them: they share one cluster."""
    return clean_redis_cluster


def test_three_primaries_with_a_replica_each_serve_every_slot(
    redis_cluster: RedisClusterGroup,
) -> None:
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    for primary in primaries:
        assert primary.cli("ROLE").splitlines()[0] == "master"
        assert "connected_slaves:1" in primary.cli("INFO", "replication")
    # Keys of one tag share a slot, so its owner holds them all; other tags spread.
    owners = {redis_cluster.owner(f"{{room{n}}}").port for n in range(12)}
    assert len(owners) == 3
    assert redis_cluster.owner("{room7}chat") is redis_cluster.owner("sse:{room7}:meta")


@pytest.mark.parametrize("shards", [1, 2])
def test_one_or_two_primaries_each_get_their_replica_joined_by_hand(
    tmp_path: Path, shards: int
) -> None:
    # redis-cli makes clusters of three primaries or more; `broadcaster cluster
    # --redis-shards 1` (or 2) has its servers joined by hand, the first replica
    # following the first primary.
    group = RedisClusterGroup(tmp_path, shards=shards, replicas=1)
    try:
        group.start()
        primaries, replicas = group.servers[:shards], group.servers[shards:]
        assert group.primaries() == primaries
        for primary, replica in zip(primaries, replicas, strict=True):
            role = replica.cli("ROLE").split()
            assert role[:3] == ["slave", "127.0.0.1", str(primary.port)], role
        for server in group.servers:
            info = cluster_info(server.port)
            assert (info["cluster_state"], info["cluster_size"]) == ("ok", str(shards))
    finally:
        group.stop()


def test_a_sharded_message_reaches_a_subscriber_on_the_owning_shard(
    redis_cluster: RedisClusterGroup,
) -> None:
    owner = redis_cluster.owner("{room7}chat")
    listener = subprocess.Popen(
        ["redis-cli", "-p", str(owner.port), "SSUBSCRIBE", "{room7}chat"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        for expected in ("ssubscribe", "{room7}chat", "1"):
            assert listener.stdout.readline().strip() == expected
        # Published through any node (-c follows MOVED to the owner).
        other = next(s for s in redis_cluster.servers if s is not owner)
        other.cli("-c", "SPUBLISH", "{room7}chat", "hello")
        for expected in ("smessage", "{room7}chat", "hello"):
            assert listener.stdout.readline().strip() == expected
    finally:
        listener.kill()
        listener.wait()


def ids_of(group: str, cluster: RedisClusterGroup, channel: str) -> list[str]:
    """The ids in `channel`'s history, read on the primary of its group."""
    key = f"sse:{{{group}}}:history:{channel}"
    with redis.Redis(port=cluster.owner(key).port) as owner:
        return [entry_id.decode() for entry_id, _ in owner.xrange(key)]


async def test_python_publishers_keep_one_sequence_per_group_on_the_shard_of_its_tag(
    redis_cluster: RedisClusterGroup,
) -> None:
    url = f"redis+cluster://{redis_cluster.seeds.split(',')[0]}"
    async with RedisPublisher.from_url(url) as publisher:
        chat = await publisher.publish("{room7}chat", "hi")
        typing = await publisher.publish("{room7}typing", "...")
        news = await publisher.publish("news", "headline")
        again = await publisher.publish("{room7}chat", "hi", idempotency_key="k1")
        assert await publisher.publish("{room7}chat", "hi", idempotency_key="k1") == again
    with SyncRedisPublisher.from_url(url) as sync:
        sports = sync.publish("sports", "goal")
    # One sequence per group: room7's two channels count 1, 2, 3; news and sports start anew.
    assert [int(i.split("-")[1]) for i in (chat, typing, again)] == [1, 2, 3]
    assert news.endswith("-1") and sports.endswith("-1")
    assert ids_of("room7", redis_cluster, "{room7}chat") == [chat, again]
    assert ids_of("room7", redis_cluster, "{room7}typing") == [typing]
    assert ids_of("news", redis_cluster, "news") == [news]
    owner = redis_cluster.owner("{room7}")
    assert owner.cli("HGET", "sse:{room7}:meta", "seq").strip() == "3"


async def test_redis_cli_publishes_on_the_shard_of_a_channel(
    redis_cluster: RedisClusterGroup,
) -> None:
    url = f"redis+cluster://{redis_cluster.seeds}"
    async with RedisPublisher.from_url(url) as publisher:
        await publisher.publish("warmup", "x")  # loads the library on every primary
    owner = redis_cluster.owner("{room7}")
    listener = subprocess.Popen(  # noqa: ASYNC220 (a listener beside the test, not awaited)
        ["redis-cli", "-p", str(owner.port), "SSUBSCRIBE", "sse:{room7}:#{room7}chat"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        for _ in range(3):
            listener.stdout.readline()  # the subscription's acknowledgement
        other = next(s for s in redis_cluster.servers if s is not owner)
        sent = other.cli("-c", "FCALL", "sse_publish", "1", "{room7}chat", "hello").strip()
        assert sent.endswith("-1"), sent
        assert [listener.stdout.readline().strip() for _ in range(2)] == [
            "smessage",
            "sse:{room7}:#{room7}chat",
        ]
        # The envelope (see message.py), as redis-cli prints it: one line per field.
        envelope = [listener.stdout.readline().strip() for _ in range(6)]
        assert envelope[1] == sent and envelope[-1] == "hello", envelope
    finally:
        listener.kill()
        listener.wait()


def broadcaster(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broadcaster", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_the_cli_publishes_on_a_cluster_named_by_seeds_or_by_one_nodes_address(
    redis_cluster: RedisClusterGroup,
) -> None:
    url = f"redis+cluster://{redis_cluster.seeds}"
    done = broadcaster("publish", "--redis-url", url, "{room7}chat", "from the CLI")
    assert done.returncode == 0, done.stderr
    # A plain redis:// URL of any node (here a replica's, maybe) is found to be a cluster.
    plain = redis_cluster.servers[-1].url
    again = broadcaster("publish", "--redis-url", plain, "{room7}chat", "by one address")
    assert again.returncode == 0, again.stderr
    sent = [done.stdout.strip(), again.stdout.strip()]
    assert ids_of("room7", redis_cluster, "{room7}chat") == sent


async def test_a_node_given_one_cluster_nodes_address_runs_on_the_cluster(
    redis_cluster: RedisClusterGroup, start_app: StartApp
) -> None:
    base = await start_app(redis_url=redis_cluster.servers[0].url, publish_token=TOKEN)
    owner = redis_cluster.owner("{room7}")
    async with aiohttp.ClientSession() as session, subscribe(session, base, ["{room7}chat"]) as sub:
        shard_channel = "sse:{room7}:#{room7}chat"
        assert owner.cli("PUBSUB", "SHARDNUMSUB", shard_channel).split()[1] == "1"
        sent = await publish(session, base, "{room7}chat", "on the cluster")
        assert await sub.wait_for(1) == [Event("on the cluster", "message", sent)]


async def get_events(
    session: aiohttp.ClientSession, base: str, channels: list[str], last: str | None = None
) -> tuple[int, bytes]:
    """The status and whole body of a GET /events expected to end by itself."""
    async with session.get(
        f"{base}/events",
        params=[("channel", channel) for channel in channels],
        headers={"Last-Event-ID": last} if last else {},
        timeout=aiohttp.ClientTimeout(total=10),
    ) as response:
        return response.status, await response.read()


@pytest.mark.parametrize(
    ("channels", "composite"),
    [(["{a}x", "{b}y"], True), (["{room}x", "{room}y"], False)],
    ids=["two-groups", "one-group"],
)
async def test_a_stream_ends_once_all_its_channels_are_closed_and_its_reconnect_gets_204(
    redis_cluster: RedisClusterGroup, start_app: StartApp, channels: list[str], composite: bool
) -> None:
    base = await start_app(redis_url=redis_cluster.url, publish_token=TOKEN)
    x, y = channels
    assert (redis_cluster.owner(x) is not redis_cluster.owner(y)) == composite, "shards"
    async with aiohttp.ClientSession() as session:
        async with subscribe(session, base, channels) as sub:
            x_end = await publish(session, base, x, "x done", close=True)
            await sub.wait_for(1)
            y_live = await publish(session, base, y, "y goes on")
            await sub.wait_for(2)  # (only if the stream goes on: y is open)
            held = sub.parser.last_event_id
            y_end = await publish(session, base, y, "y done", close=True)
            await asyncio.wait_for(sub.ended.wait(), 10)
            assert [event.data for event in sub.events] == ["x done", "y goes on", "y done"]
            last = sub.parser.last_event_id
        if composite:  # one position per group
            assert "~" in held and "~" in last, (held, last)
        else:
            assert [event.id for event in sub.events] == [x_end, y_live, y_end]
        assert await get_events(session, base, channels, last) == (204, b"")
        assert await get_events(session, base, channels) == (204, b"")
        # From before the end: what follows, then the end.
        status, body = await get_events(session, base, channels, held)
        assert status == 200 and body.endswith(b"data: y done\n\n") and b"goes on" not in body


async def test_sse_seen_names_its_group_on_a_cluster(redis_cluster: RedisClusterGroup) -> None:
    url = f"redis+cluster://{redis_cluster.seeds}"
    async with RedisPublisher.from_url(url) as publisher:
        sent = await publisher.publish("{room7}chat", "x")  # (loads the library)
    owner = redis_cluster.owner("{room7}")
    assert "usage on a Redis Cluster" in owner.cli("FCALL", "sse_seen", "0", sent)
    assert owner.cli("-c", "FCALL", "sse_seen", "1", "{room7}chat", sent).strip() == "0"


async def test_our_calls_declare_every_key_and_a_wrong_one_is_refused(
    redis_cluster: RedisClusterGroup,
) -> None:
    keys = KeySpace("sse:", clustered=True)
    url = f"redis+cluster://{redis_cluster.seeds}"
    async with RedisPublisher.from_url(url) as publisher:
        first = await publisher.publish("{room7}chat", "x")  # (declared, with its own key)
    owner = redis_cluster.owner("{room7}")
    declared = keys.touched("{room7}chat", None)
    sent = owner.cli("FCALL", "sse_publish", "4", "{room7}chat", *declared, "y").strip()
    assert EventId.parse(sent) > EventId.parse(first)  # type: ignore[operator]
    wrong = [*declared[:2], "sse:{room7}:elsewhere"]
    refused = owner.cli("FCALL", "sse_publish", "4", "{room7}chat", *wrong, "z")
    assert "declared key sse:{room7}:elsewhere is not sse:{room7}:gaps" in refused
    short = owner.cli("FCALL", "sse_publish", "2", "{room7}chat", declared[0], "z")
    assert "declare the channel alone, or with every key it touches" in short


async def test_replicas_confirm_each_shards_publishes_with_a_wait_there(
    redis_cluster: RedisClusterGroup,
) -> None:
    primaries = redis_cluster.primaries()
    await wait_until(lambda: all(map(replicas_online, primaries)), 10, "the replicas to sync")
    url = f"redis+cluster://{redis_cluster.seeds}"
    config = LibraryConfig(replicas=1, replica_timeout=2)
    owner = redis_cluster.owner("{room7}")
    other = redis_cluster.channel_elsewhere(owner)
    replica = next(
        s
        for s in redis_cluster.servers
        if s.cli("ROLE").split()[:3] == ["slave", "127.0.0.1", str(owner.port)]
    )
    async with RedisPublisher.from_url(url, config=config, retries=0) as publisher:
        await publisher.publish_many([("{room7}chat", "a"), (other, "b")])  # both confirmed
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)  # room7's shard loses its replica
        try:
            with pytest.raises(NotReplicated, match="0 of 1 replicas confirmed within 2 s"):
                await publisher.publish_many([(other, "c"), ("{room7}chat", "d")])
            assert await publisher.publish(other, "e")  # the other shard's WAIT is met
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)


async def test_a_cluster_of_one_primary_is_joined_by_hand(tmp_path: Path) -> None:
    # `redis-cli --cluster create` wants three primaries; the benchmark's one-shard run
    # (and anyone trying a cluster on a laptop) gets one all the same.
    server = RedisServer(tmp_path)
    server.port = cluster_port()
    server.extra = cluster_options(server.port)
    server.start()
    try:
        create_cluster([server.port], replicas=0)
        async with RedisPublisher.from_url(f"redis+cluster://127.0.0.1:{server.port}") as pub:
            assert (await pub.publish("news", "one shard")).endswith("-1")
    finally:
        server.kill()
