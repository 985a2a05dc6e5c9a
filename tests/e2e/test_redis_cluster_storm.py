"""Faults of a Redis Cluster under load: a 3-primary, 3-replica cluster; two nodes; clients
on channels of one group, of several groups on several shards, and single ones; a storm
of publishes through the nodes; and, mid-storm, one of: a shard primary SIGKILLed (its
replica promoted), a slot migrated (`redis-cli --cluster reshard`), the nodes' links to
one shard killed, or a new primary added and slots rebalanced onto it.

Each group's messages reach every client in order, none twice, and every acknowledged
one (publishes wait for a replica, `PUBLISH_REPLICAS=1`, where a shard keeps one after
the fault: the killed primary's shard has two); a `failover` reset may stand only for
what was published and never acknowledged. A client resuming on the other node from
before the fault gets the rest the same way.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from broadcaster.core.channels import group_of
from tests.support.client import subscribe
from tests.support.eventsource import EventSource
from tests.support.nodes import StartNode
from tests.support.processes import Node, RedisServer
from tests.support.publish import post
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.sse import Event
from tests.support.wait import eventually, wait_until

pytestmark = pytest.mark.slow

MESSAGES = 240
FAULT_AT = 80  # acknowledged publishes before the fault


@dataclass(frozen=True)
class Sent:
    channel: str
    data: str
    id: str


def order(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def channel_of(event: Event) -> str:
    return event.data.partition("|")[0]


def own_id(event: Event, follows: list[str]) -> str:
    """The id of `event` in its group: the plain id, or its group's part of a composite."""
    names = sorted({group_of(channel) for channel in follows})
    if len(names) == 1:
        return event.id
    parts = event.id.partition("~")[0].split("_")
    return parts[names.index(group_of(channel_of(event)))]


def real(events: list[Event]) -> list[Event]:
    return [event for event in events if event.event != "reset"]


def check_stream(events: list[Event], wanted: list[Sent], follows: list[str]) -> None:
    """Group by group: in id order, none twice, every acknowledged one (a failover reset
    may stand for what was published and never acknowledged)."""
    for event in events:
        if event.event == "reset":
            assert orjson.loads(event.data)["reason"] == "failover", event
    for group in {group_of(channel) for channel in follows}:
        mine = [e for e in real(events) if group_of(channel_of(e)) == group]
        ids = [own_id(e, follows) for e in mine]
        assert ids == sorted(ids, key=order), f"group {group} in id order"
        assert len(ids) == len(set(ids)), f"group {group}: none twice"
        ours = sorted(
            (s for s in wanted if group_of(s.channel) == group), key=lambda s: order(s.id)
        )
        acknowledged = [s.data for s in ours]
        got = [e.data for e in mine if e.data in set(acknowledged)]
        assert got == acknowledged, f"group {group}: every acknowledged one, once, in order"


def covered(events: list[Event], wanted: list[Sent]) -> Callable[[], bool]:
    return lambda: {s.data for s in wanted} <= {e.data for e in events}


async def publish(session: aiohttp.ClientSession, nodes: list[Node], channel: str, n: int) -> Sent:
    """Publish message `n` through a node, retrying under one key until it is acknowledged."""
    data = f"{channel}|m{n}"
    deadline = asyncio.get_running_loop().time() + 90
    for attempt in itertools.count():
        assert asyncio.get_running_loop().time() < deadline, f"message {n} never acknowledged"
        node = nodes[(n + attempt) % len(nodes)]
        try:
            body = {"channel": channel, "data": data}
            status, answer = await post(session, node.url, body, key=f"storm-{n}")
            if status == 200:
                return Sent(channel, data, str(answer["id"]))
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)  # a producer's backoff, not a wait for a condition
    raise AssertionError("unreachable")


Fault = Callable[[RedisClusterGroup, list[str], Path], Awaitable[dict[str, float]]]
"""Acts, then names the metric series every node must show (at least the value)."""


def link_series(name: str, server: RedisServer) -> str:
    return f'broadcaster_redis_shard_{name}{{shard="127.0.0.1:{server.port}"}}'


async def storm(
    cluster: RedisClusterGroup,
    *,
    start_node: StartNode,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    fault: Fault,
    channels: list[str],
    publish_replicas: int,
) -> None:
    """`channels`: three groups on three shards, then a sibling of the first's group."""
    first, second, third, sibling = channels
    follows_all = [
        [first, second, third],  # three groups, three shards: composite ids
        [first, sibling],  # one group: plain ids
        [second],
        [third, sibling],
    ]
    settings = {"publish_token": "t", "retry_ms": "200", "publish_replicas": str(publish_replicas)}
    nodes = [await asyncio.to_thread(start_node, cluster.url, **settings) for _ in range(2)]
    async with AsyncExitStack() as stack:
        clients: list[tuple[list[str], EventSource]] = []
        for node, follows in itertools.product(nodes, follows_all):
            query = "&".join(f"channel={quote(c)}" for c in follows)
            client = EventSource(session, f"{node.url}/events?{query}")
            stack.push_async_callback(client.close)
            clients.append((follows, client))
        await wait_until(lambda: all(c.connects for _, c in clients), 10, "the clients")

        sent: list[Sent] = []
        todo = iter(range(MESSAGES))
        faulted = asyncio.Event()
        shown: dict[str, float] = {}

        async def producer() -> None:
            for n in todo:
                if len(sent) >= FAULT_AT and not faulted.is_set():
                    faulted.set()
                    shown.update(await fault(cluster, channels, tmp_path))
                sent.append(await publish(session, nodes, channels[n % 4], n))

        await asyncio.gather(*(producer() for _ in range(12)))
        assert faulted.is_set()
        for node, (series, least) in itertools.product(nodes, shown.items()):

            async def shows(node: Node = node, series: str = series, least: float = least) -> bool:
                try:
                    return await asyncio.to_thread(node.metric, series) >= least
                except AssertionError:  # no such series yet
                    return False

            await eventually(shows, 10, f"{series} on {node.url}")
        by_data = {s.data: s for s in sent}

        for follows, client in clients:
            wanted = [by_data[f"{c}|m{n}"] for n, c in _all(channels) if c in follows]
            await wait_until(covered(client.events, wanted), 60, "every message")
            check_stream(client.events, wanted, follows)

        # Each client resumes on the other node from early in its stream (before the
        # fault): the rest comes, group by group.
        for n, (follows, client) in enumerate(clients):
            position = real(client.events)[10]
            at = {group_of(channel_of(e)): own_id(e, follows) for e in real(client.events)[:11]}
            other = nodes[(n // len(follows_all) + 1) % len(nodes)]
            wanted = [
                s
                for s in (by_data[f"{c}|m{k}"] for k, c in _all(channels) if c in follows)
                if group_of(s.channel) not in at or order(s.id) > order(at[group_of(s.channel)])
            ]
            headers = {"Last-Event-ID": position.id}
            async with subscribe(session, other.url, follows, headers=headers) as resumed:
                await wait_until(covered(resumed.events, wanted), 30, "the resume")
                check_stream(resumed.events, wanted, follows)
                assert not {e.data for e in real(resumed.events)} - {s.data for s in wanted}


def _all(channels: list[str]) -> list[tuple[int, str]]:
    return [(n, channels[n % 4]) for n in range(MESSAGES)]


def spread(cluster: RedisClusterGroup) -> list[str]:
    """A channel on each primary, and a sibling of the first's group."""
    found = list(cluster.channels_by_primary().values())
    return [*found, found[0].replace("}c", "}d")]


async def settle(cluster: RedisClusterGroup) -> None:
    async def settled() -> bool:
        return await asyncio.to_thread(cluster.settled)

    await eventually(settled, 60, "the cluster to settle")


async def kill_a_primary(
    cluster: RedisClusterGroup, channels: list[str], _: Path
) -> dict[str, float]:
    primary = cluster.owner(channels[1])
    assert primary.process is not None
    os.kill(primary.process.pid, signal.SIGKILL)
    slot = cluster.slot(channels[1])

    def promoted() -> bool:
        # (CLUSTER INFO says ok until the primary is marked failed: ask who serves the slot.)
        views = {cluster.owner_of(slot, asked=s) for s in cluster.servers if s.alive()}
        return len(views) == 1 and primary not in views and cluster.settled()

    async def done() -> bool:
        return await asyncio.to_thread(promoted)

    await eventually(done, 60, "a replica to take over")
    return {link_series("connected", cluster.owner(channels[1])): 1}


async def reshard(cluster: RedisClusterGroup, channels: list[str], _: Path) -> dict[str, float]:
    source = cluster.owner(channels[2])
    target = cluster.owner(channels[0])
    await asyncio.to_thread(cluster.reshard, source, target, 64)
    assert cluster.owner(channels[2]) is target, "the channel's slot moved"
    return {link_series("sunsubscribes_total", source): 1}


async def kill_links(cluster: RedisClusterGroup, channels: list[str], _: Path) -> dict[str, float]:
    shard = cluster.owner(channels[0])
    killed = shard.cli("CLIENT", "KILL", "TYPE", "pubsub")
    assert killed.strip() == "2", "each node's link to that shard"
    return {link_series("reconnects_total", shard): 1, link_series("connected", shard): 1}


async def add_a_primary(
    cluster: RedisClusterGroup, channels: list[str], tmp_path: Path
) -> dict[str, float]:
    fresh = await asyncio.to_thread(cluster.add_primary, tmp_path / "fresh")
    await settle(cluster)
    await asyncio.to_thread(cluster.rebalance)
    await settle(cluster)
    moved = [c for c in channels if cluster.owner(c) is fresh]
    assert moved, "slots of a followed channel moved to the new primary"
    # The new primary runs the function library (a node's link, or a publisher, loaded it).
    fresh.cli("FCALL", "sse_publish", "1", f"{{{group_of(moved[0])}}}probe", "hello")
    return {link_series("connected", fresh): 1}


def reshard_channels(cluster: RedisClusterGroup) -> list[str]:
    """As `spread`, the third in the first slots of its primary (`reshard` moves them)."""
    channels = spread(cluster)
    third = cluster.owner(channels[2])
    channels[2] = cluster.channel_in_slots(cluster.first_slot(third), 64)
    return channels


def rebalance_channels(cluster: RedisClusterGroup) -> list[str]:
    """Channels in slots `rebalance` moves to an empty primary: the lowest of each."""
    first, second, third = (
        cluster.channel_in_slots(cluster.first_slot(p), 200, prefix=f"p{n}")
        for n, p in enumerate(cluster.primaries())
    )
    return [first, second, third, first.replace("}c", "}d")]


@dataclass(frozen=True)
class Case:
    fault: Fault
    channels: Callable[[RedisClusterGroup], list[str]]
    replicas: int = 1  # per shard
    publish_replicas: int = 1


CASES = {
    # Two replicas: the promoted one has another to confirm publishes.
    "primary-killed": Case(kill_a_primary, spread, replicas=2),
    "slot-resharded": Case(reshard, reshard_channels),
    "links-killed": Case(kill_links, spread),
    # The new primary has no replica: nothing could confirm publishes there.
    "primary-added": Case(add_a_primary, rebalance_channels, publish_replicas=0),
}


@pytest.mark.parametrize("name", CASES)
async def test_every_group_stays_exact_through_a_fault_mid_storm(
    start_node: StartNode, session: aiohttp.ClientSession, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    cluster = RedisClusterGroup(tmp_path / "redis", replicas=case.replicas)
    try:
        await asyncio.to_thread(cluster.start)
        await storm(
            cluster,
            start_node=start_node,
            session=session,
            tmp_path=tmp_path,
            fault=case.fault,
            channels=case.channels(cluster),
            publish_replicas=case.publish_replicas,
        )
    finally:
        cluster.stop()
