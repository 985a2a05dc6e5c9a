"""Redis Sentinel: nodes and publishers find the primary through Sentinel and follow a
failover (SIGKILL of the primary) by themselves."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from broadcaster import SyncRedisPublisher
from broadcaster.brokers.redis.library import NotReplicated
from tests.support.cluster import local_cluster
from tests.support.eventsource import EventSource
from tests.support.processes import Node, RedisServer, SentinelGroup, caught_up
from tests.support.wait import eventually, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path)
    group.start()
    yield group
    group.stop()


def received(client: EventSource, count: int) -> Callable[[], bool]:
    return lambda: len(client.events) >= count


async def test_nodes_and_publishers_follow_a_sentinel_failover(
    group: SentinelGroup, start_node: Callable[..., Node], session: aiohttp.ClientSession
) -> None:
    await wait_until(group.replicas_in_sync, 20, "the replicas to sync")
    await wait_until(lambda: group.master_port() == group.primary.port, 20, "the Sentinels")
    await wait_until(group.watching, 30, "the Sentinels to know each other and the replicas")
    nodes = [start_node(group.url, retry_ms="200") for _ in range(2)]
    publisher = SyncRedisPublisher.from_url(group.url, retries=8)
    async with AsyncExitStack() as stack:
        clients = []
        for node in nodes:
            for _ in range(2):
                client = EventSource(session, f"{node.url}/events?channel=fo&channel=other")
                stack.push_async_callback(client.close)
                clients.append(client)
        await wait_until(lambda: all(c.connects for c in clients), 10, "the clients")
        before = [await asyncio.to_thread(publisher.publish, "fo", f"m{n}") for n in range(10)]
        for client in clients:
            await wait_until(received(client, 10), 10, "ten events")
        # Every replica holds them: nothing acknowledged is lost in this failover.
        await wait_until(lambda: caught_up(group.primary, *group.replicas), 10, "the replicas")

        assert group.primary.process is not None
        os.kill(group.primary.process.pid, signal.SIGKILL)
        await wait_until(
            lambda: group.master_port() not in (None, group.primary.port), 30, "a failover"
        )
        after = [await asyncio.to_thread(publisher.publish, "fo", f"n{n}") for n in range(10)]

        async def ready() -> bool:
            return all(node.ready() for node in nodes)

        await eventually(ready, 30, "the nodes to follow the new primary")
        for client in clients:
            await wait_until(received(client, 20), 30, "every event")
            assert [e.id for e in client.events] == before + after, "none lost, none twice"
            assert [e.data for e in client.events] == [
                *(f"m{n}" for n in range(10)),
                *(f"n{n}" for n in range(10)),
            ]
    publisher.close()


async def test_the_local_cluster_runs_sentinels_and_survives_its_primary(
    session: aiohttp.ClientSession,
) -> None:
    with local_cluster(2, "--sentinel", retry_ms="200") as cluster:
        servers = ("redis", "replica1", "replica2")
        assert {*servers, "sentinel1", "sentinel2", "sentinel3"} <= set(cluster)
        hosts = ",".join(cluster[f"sentinel{n}"][0] for n in (1, 2, 3))
        url = f"redis+sentinel://{hosts}/primary"
        async with AsyncExitStack() as stack:
            client = EventSource(session, f"{cluster['lb'][0]}/events?channel=ha")
            stack.push_async_callback(client.close)
            await wait_until(lambda: client.connects > 0, 10, "the client")
            # Retries for at least 16 s: enough for a second election after a split vote
            # (the Sentinels try again 6 s after the first).
            with SyncRedisPublisher.from_url(url, retries=20) as publisher:
                ids = [await asyncio.to_thread(publisher.publish, "ha", f"m{n}") for n in range(5)]
                await wait_until(received(client, 5), 10, "five events")
                primary, *replicas = (
                    RedisServer.at(int(cluster[name][0].rsplit(":", 1)[1])) for name in servers
                )
                await wait_until(lambda: caught_up(primary, *replicas), 10, "the replicas")
                os.kill(cluster["redis"][1], signal.SIGKILL)
                ids += [await asyncio.to_thread(publisher.publish, "ha", f"n{n}") for n in range(5)]
            await wait_until(received(client, 10), 30, "every event")
            assert [e.id for e in client.events] == ids


async def test_the_local_clusters_primary_refuses_publishes_without_a_replica() -> None:
    # The shipped `min-replicas-to-write`: a primary cut off from its replicas (here they
    # stop) refuses publishes within seconds, so it cannot issue ids past the 10 s a new
    # primary's sequence jumps; it takes them again once a replica is back.
    with local_cluster(1, "--sentinel") as cluster:
        hosts = ",".join(cluster[f"sentinel{n}"][0] for n in (1, 2, 3))
        url = f"redis+sentinel://{hosts}/primary"
        with SyncRedisPublisher.from_url(url, retries=0) as publisher:
            publisher.publish("ha", "before")
            for name in ("replica1", "replica2"):
                os.kill(cluster[name][1], signal.SIGSTOP)
            try:

                async def refused() -> bool:
                    try:
                        await asyncio.to_thread(publisher.publish, "ha", "isolated")
                    except NotReplicated as exc:
                        return "NOREPLICAS" in str(exc)
                    return False

                await eventually(refused, 30, "the primary to refuse publishes")
            finally:
                for name in ("replica1", "replica2"):
                    os.kill(cluster[name][1], signal.SIGCONT)

            async def accepted() -> bool:
                try:
                    await asyncio.to_thread(publisher.publish, "ha", "after")
                except NotReplicated:
                    return False
                return True

            await eventually(accepted, 30, "the primary to take publishes again")
