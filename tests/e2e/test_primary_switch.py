"""A new primary behind the same address (managed Redis, DNS failover): the node notices
the new replication history, counts it, and backfills before delivering anything newer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack

import aiohttp
import pytest

from tests.support.eventsource import EventSource
from tests.support.metrics import metric
from tests.support.nodes import StartNode
from tests.support.processes import Node, RedisServer, caught_up, replicas_online
from tests.support.proxy import SwitchableProxy
from tests.support.publish import publish
from tests.support.wait import eventually, wait_until

pytestmark = pytest.mark.slow


async def test_a_promoted_replica_behind_the_same_address(
    redis_pair: tuple[RedisServer, RedisServer],
    start_node: StartNode,
    session: aiohttp.ClientSession,
) -> None:
    old, new = redis_pair
    await wait_until(lambda: replicas_online(old), 10, "the replica")
    async with SwitchableProxy(old.port) as proxy, AsyncExitStack() as stack:
        # In a thread: the proxy runs on this event loop, which must keep serving.
        node = await asyncio.to_thread(
            start_node, f"redis://127.0.0.1:{proxy.port}", publish_token="t"
        )
        clients = []
        for _ in range(3):
            client = EventSource(session, f"{node.url}/events?channel=sw")
            stack.push_async_callback(client.close)
            clients.append(client)
        await wait_until(lambda: all(c.connects for c in clients), 10, "the clients")

        ids = [await publish(session, node.url, "sw", f"m{n}") for n in range(10)]
        await wait_until(lambda: caught_up(old, new), 10, "the replica to catch up")
        new.cli("REPLICAOF", "NO", "ONE")  # promoted: a new replication history
        old.kill()
        proxy.switch(new.port)

        async def switched() -> bool:
            return await metric(session, node.url, "broadcaster_redis_failovers_total") == 1

        await eventually(switched, 20, "the node to notice the new primary")
        await eventually(lambda: _ready(node), 20, "the node to be ready again")
        ids += [await publish(session, node.url, "sw", f"n{n}") for n in range(10)]
        for client in clients:
            await wait_until(received(client, 20), 20, "every event")
            assert [e.id for e in client.events] == ids, "none lost, none twice, in order"


async def _ready(node: Node) -> bool:
    return await asyncio.to_thread(node.ready)


def received(client: EventSource, count: int) -> Callable[[], bool]:
    return lambda: len(client.events) >= count
