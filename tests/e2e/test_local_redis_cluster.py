"""`broadcaster cluster --redis-shards N`: the local topology on a Redis Cluster of N
primaries with a replica each, instead of one Redis. Clients behind the balancer follow
channels on every shard, publishes through the balancer and `broadcaster publish` reach
them, and SIGTERM or Ctrl-C stops every process it started."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Collection
from contextlib import AsyncExitStack

import aiohttp
import pytest
from redis.crc import key_slot

from broadcaster.cluster.redis_cluster import cluster_info
from tests.support.client import Subscriber, subscribe
from tests.support.cluster import Cluster, leftovers, local_cluster
from tests.support.processes import run_broadcaster
from tests.support.publish import TOKEN, publish
from tests.support.sse import Event
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow


def port_of(cluster: Cluster, name: str) -> int:
    return int(cluster[name][0].rsplit(":", 1)[1])


def cluster_nodes(port: int) -> list[list[str]]:
    """`CLUSTER NODES` of the server on `port`, a list of fields per node."""
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "CLUSTER", "NODES"],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def address_port(fields: list[str]) -> int:
    return int(fields[1].split("@")[0].rsplit(":", 1)[1])


def replicas_of(port: int) -> dict[int, int]:
    """Each replica's port and the port of the primary it follows, as `port` says."""
    nodes = cluster_nodes(port)
    ids = {fields[0]: address_port(fields) for fields in nodes}
    return {address_port(f): ids.get(f[3], 0) for f in nodes if "slave" in f[2].split(",")}


def channels_on(primaries: list[int]) -> list[str]:
    """An untagged channel on each of `primaries` (its group, its own name, in their
    slots), as the first of them says."""
    ranges = [
        (int(first), int(last or first), address_port(fields))
        for fields in cluster_nodes(primaries[0])
        for first, _, last in (served.partition("-") for served in fields[8:])
        if first.isdigit()
    ]

    def owner(channel: str) -> int:
        slot = key_slot(channel.encode())
        return next(port for first, last, port in ranges if first <= slot <= last)

    names = [f"room{n}" for n in range(1000)]
    return [next(name for name in names if owner(name) == primary) for primary in primaries]


async def all_gone(pids: Collection[int]) -> None:
    """Wait until none of `pids`, nor anything in their sessions, runs any more."""
    with contextlib.suppress(AssertionError):
        await wait_until(lambda: not leftovers(pids), 10, "every child of the cluster to end")
    assert leftovers(pids) == []


async def assert_shards(cluster: Cluster, shards: int) -> None:
    """Every server of `cluster` says the Redis Cluster is up with `shards` primaries,
    named `redis1`..., and comes to see each with one replica: `replica1`... ."""
    primaries = [port_of(cluster, f"redis{n}") for n in range(1, shards + 1)]
    replicas = [port_of(cluster, f"replica{n}") for n in range(1, shards + 1)]
    for port in primaries + replicas:
        info = cluster_info(port)
        assert info["cluster_state"] == "ok", (port, info)
        assert info["cluster_slots_ok"] == "16384"
        assert info["cluster_size"] == str(shards)  # primaries that serve slots
        assert info["cluster_known_nodes"] == str(2 * shards)

    def paired() -> bool:  # (a replica's role reaches the other servers by gossip)
        return all(
            sorted(followed) == sorted(replicas) and sorted(followed.values()) == sorted(primaries)
            for followed in (replicas_of(port) for port in primaries + replicas)
        )

    await wait_until(paired, 10, "every server to see one replica per primary")


async def test_three_shards_under_two_nodes_take_every_publish_and_stop_on_sigterm(
    session: aiohttp.ClientSession,
) -> None:
    flags = ("--redis-shards", "3")
    with local_cluster(2, *flags, stop_with=signal.SIGTERM, publish_token=TOKEN) as cluster:
        pids = [pid for _, pid in cluster.values()]
        names = {"lb", "node1", "node2", "redis1", "redis2", "redis3"}
        assert set(cluster) == names | {"replica1", "replica2", "replica3"}
        await assert_shards(cluster, 3)
        primaries = [port_of(cluster, f"redis{n}") for n in (1, 2, 3)]
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in primaries)
        channels = channels_on(primaries)  # one on each shard
        lb = cluster["lb"][0]
        async with AsyncExitStack() as stack:
            subs: dict[str, Subscriber] = {
                channel: await stack.enter_async_context(subscribe(session, lb, [channel]))
                for channel in channels
            }
            spanning = await stack.enter_async_context(subscribe(session, lb, channels))
            expected: dict[str, list[Event]] = {}
            for channel in channels:
                http_id = await publish(session, lb, channel, "over http")
                done = await asyncio.to_thread(
                    run_broadcaster, "publish", channel, "from the cli", redis_url=url
                )
                assert done.returncode == 0, done.stderr
                cli_id = done.stdout.strip()
                expected[channel] = [
                    Event("over http", "message", http_id),
                    Event("from the cli", "message", cli_id),
                ]
            for channel, sub in subs.items():
                assert await sub.wait_for(2) == expected[channel]
            # One stream over the three shards: every message, each with a composite id.
            events = await spanning.wait_for(6)
            assert sorted(e.data for e in events) == sorted(3 * ["over http", "from the cli"])
            assert all("~" in e.id for e in events), [e.id for e in events]
    await all_gone(pids)


async def test_one_shard_with_its_replica_serves_the_printed_redis_cli_and_stops_on_ctrl_c(
    session: aiohttp.ClientSession,
) -> None:
    with local_cluster(1, "--redis-shards", "1") as cluster:
        pids = [pid for _, pid in cluster.values()]
        assert set(cluster) == {"lb", "node1", "redis1", "replica1"}
        await assert_shards(cluster, 1)
        primary = str(port_of(cluster, "redis1"))
        async with subscribe(session, cluster["lb"][0], ["news"]) as sub:
            # As `broadcaster cluster` prints it: redis-cli -c -p <redis1> FCALL ...
            cli = await asyncio.create_subprocess_exec(
                *("redis-cli", "-c", "-p", primary, "FCALL", "sse_publish", "1", "news", "hello"),
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(cli.communicate(), 10)
            assert cli.returncode == 0, out
            assert await sub.wait_for(1) == [Event("hello", "message", out.decode().strip())]
    await all_gone(pids)
