"""`broadcaster cluster`: nginx in front of real nodes, Redis, Prometheus; failures and
rebalancing, with clients that reconnect like browsers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from tests.support.cluster import fcall_publish, local_cluster
from tests.support.eventsource import EventSource
from tests.support.metrics import metric
from tests.support.processes import Node
from tests.support.wait import eventually, wait_until

pytestmark = pytest.mark.slow


def connected(client: EventSource) -> Callable[[], bool]:
    return lambda: client.connects >= 1


def received(client: EventSource, count: int) -> Callable[[], bool]:
    return lambda: len(client.events) >= count


async def connections(session: aiohttp.ClientSession, node: str) -> int:
    return int(await metric(session, node, "broadcaster_connections"))


async def test_cluster_balances_survives_a_node_and_is_scraped(
    session: aiohttp.ClientSession,
) -> None:
    with local_cluster(3, "--prometheus") as cluster:
        lb, redis = cluster["lb"][0], cluster["redis"][0]
        nodes = [cluster[f"node{n}"][0] for n in (1, 2, 3)]
        async with AsyncExitStack() as stack:
            clients = []
            for _ in range(9):
                client = EventSource(session, f"{lb}/events?channel=room")
                stack.push_async_callback(client.close)
                clients.append(client)
                await wait_until(connected(client), 10, "a client to connect")
            # nginx spread the clients: every node serves some.
            assert all([await connections(session, node) > 0 for node in nodes])
            ids = [await fcall_publish(redis, "room", f"m{n}") for n in range(10)]
            for client in clients:
                await wait_until(received(client, 10), 10, "ten events")

            async def scraped() -> bool:
                url = f"{cluster['prometheus'][0]}/api/v1/query"
                async with session.get(url, params={"query": "sum(broadcaster_connections)"}) as r:
                    result = (await r.json())["data"]["result"]
                return bool(result) and result[0]["value"][1] == "9"

            await eventually(scraped, 30, "Prometheus to sum 9 connections over the nodes")
            async with session.get(f"{cluster['prometheus'][0]}/api/v1/rules") as r:
                groups = {group["name"] for group in (await r.json())["data"]["groups"]}
            assert {"broadcaster-recording", "broadcaster-alerts"} <= groups, "rules loaded"

            os.kill(cluster["node1"][1], signal.SIGKILL)
            ids += [await fcall_publish(redis, "room", f"m{n}") for n in range(10, 30)]
            for client in clients:
                await wait_until(received(client, 30), 20, "thirty events")
                assert [e.id for e in client.events] == ids  # none lost, none twice
            survivors = [await connections(session, node) for node in nodes[1:]]
            assert sum(survivors) == 9


async def test_max_age_and_draining_spread_reconnects_without_loss(
    session: aiohttp.ClientSession,
) -> None:
    with local_cluster(2, max_connection_age="1", heartbeat_interval="1") as cluster:
        lb, redis = cluster["lb"][0], cluster["redis"][0]
        async with AsyncExitStack() as stack:
            clients = []
            for _ in range(4):
                client = EventSource(session, f"{lb}/events?channel=age")
                stack.push_async_callback(client.close)
                clients.append(client)
            for client in clients:
                await wait_until(connected(client), 10, "a client to connect")
            ids = []
            for n in range(120):
                ids.append(await fcall_publish(redis, "age", f"m{n}"))
                if n == 80:
                    os.kill(cluster["node2"][1], signal.SIGTERM)  # drain one node
                await asyncio.sleep(0.02)
            for client in clients:
                await wait_until(received(client, 120), 20, "every event")
                assert [e.id for e in client.events] == ids
                assert client.connects >= 2, "streams were ended to rebalance"
                hints = [r for r in client.retries if r != 3000]
                assert hints and all(3000 <= r <= 9000 for r in hints)
            assert len({r for c in clients for r in c.retries}) > 2, "reconnects are spread"


def test_a_balancer_port_held_by_a_leftover_node_is_refused(
    start_node: Callable[..., Node],
) -> None:
    # A `broadcaster serve` left running on the port: nginx cannot bind it, and the old
    # node would answer the cluster's health check. The cluster must not pass it off as
    # its balancer.
    leftover = start_node()
    port = str(leftover.port)
    done = subprocess.run(
        [sys.executable, "-m", "broadcaster", "cluster", "--nodes", "1", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    found = re.fullmatch(
        r"broadcaster: lb \(pid \d+\) cannot listen on 127\.0\.0\.1:(\d+): it is held by pid "
        r"(\d+) \((.*)\); stop that or choose another --port; see (\S+/lb\.log)",
        line,
    )
    assert found is not None, line
    named_port, pid, command, log = found.groups()
    assert leftover.process is not None
    assert (named_port, int(pid)) == (port, leftover.process.pid)
    assert command.endswith("-m broadcaster serve")
    assert Path(log).exists()
    assert leftover.ready()
