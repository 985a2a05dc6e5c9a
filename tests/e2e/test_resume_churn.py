"""Exactly once under churn, on real processes: two nodes on one Redis, a steady stream of
publishes over several channels, clients that keep reconnecting to a random node with
their `Last-Event-ID`, and the nodes' pub/sub connections killed every few hundred ms.

Every client's events, across all its connections, are exactly its channels' history:
every id once, in order, no `reset` (nothing was trimmed). This is the fault that once
gave duplicates: a stream whose replay was read while its node was backfilling after a
lost pub/sub connection got the backfill's messages a second time.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable

import aiohttp
import pytest
import redis.asyncio as redis

from broadcaster import RedisPublisher
from tests.support.client import subscribe
from tests.support.processes import Node, RedisServer
from tests.support.proxy import LatencyProxy
from tests.support.sse import Event
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

CHANNELS = ("a", "b", "c")
CLIENTS = 20
CHURN_SECONDS = 12.0
PUBLISH_EVERY = 0.004  # about 250 publishes a second
LATENCY = 0.002  # seconds each way between the nodes and Redis


class Client:
    """One reconnecting client: what it follows, and every event it got."""

    def __init__(self, number: int) -> None:
        self.rng = random.Random(number)
        self.channels = sorted(self.rng.sample(CHANNELS, self.rng.choice([1, 2])))
        self.events: list[Event] = []
        self.position = ""  # its Last-Event-ID, once it has one
        self.visits: list[tuple[str, str, list[str]]] = []  # node, resumed after, ids

    async def visit(self, session: aiohttp.ClientSession, base: str, dwell: float) -> None:
        """One connection: resume from the position, stay `dwell` seconds, leave."""
        headers = {"Last-Event-ID": self.position} if self.position else None
        query = {"lastEventId": "earliest"}  # the first connection starts from the oldest
        async with subscribe(session, base, self.channels, headers, query) as sub:
            await asyncio.sleep(dwell)  # (how long a user stays: the workload, not a wait)
        self.visits.append((base, self.position, [event.id for event in sub.events]))
        self.events += sub.events
        self.position = sub.parser.last_event_id or self.position

    async def finish(self, session: aiohttp.ClientSession, node: Node, newest: str) -> None:
        """Resume on `node` until the client has had `newest` (at once if it had)."""
        headers = {"Last-Event-ID": self.position}
        async with subscribe(session, node.url, self.channels, headers) as sub:

            def arrived() -> bool:
                return any(event.id == newest for event in (*self.events, *sub.events))

            try:
                await wait_until(arrived, 30, f"{self.channels} to reach {newest}")
            except AssertionError as exc:
                got = [event.id for event in sub.events][-5:]
                log = node.log.read_text()[-3000:]
                raise AssertionError(f"{exc}; got {got} after {self.position}\n{log}") from None
        self.visits.append((node.url, self.position, [event.id for event in sub.events]))
        self.events += sub.events

    def around(self, index: int) -> str:
        """The connections that gave the events near `index`: where each resumed, what it
        got."""
        seen, lines = 0, []
        for node, after, ids in self.visits:
            if seen + len(ids) >= index - 3 and seen <= index + 3:
                lines.append(f"{node} after {after or 'earliest'}: {ids[:8]}...{ids[-3:]}")
            seen += len(ids)
        return "\n".join(lines)

    def ids(self) -> list[str]:
        return [event.id for event in self.events]


def divergence(got: list[str], want: list[str]) -> str:
    """Where two id sequences part, in a few words."""
    for n, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"at {n}: got {got[max(0, n - 2) : n + 4]}, want {want[max(0, n - 2) : n + 4]}"
    return f"lengths {len(got)} and {len(want)}"


async def test_clients_resuming_through_pubsub_kills_get_every_message_once(
    redis_server: RedisServer, start_node: Callable[..., Node]
) -> None:
    truth: dict[str, list[str]] = {channel: [] for channel in CHANNELS}
    clients = [Client(n) for n in range(CLIENTS)]
    # The nodes reach Redis across a (simulated) network, LATENCY each way: a backfill
    # after a reconnect takes a few round trips, as it does in production.
    async with LatencyProxy(redis_server.port, LATENCY) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}"
        settings = {"history_maxlen": "100000", "retry_ms": "0"}
        # (Started from a thread: the proxy runs on this loop, and a node waits for Redis.)
        start = functools.partial(start_node, url, **settings)
        nodes = [await asyncio.to_thread(start) for _ in range(2)]
        await churn(nodes, redis_server.url, clients, truth)

    published = sum(len(ids) for ids in truth.values())
    assert published > 1000, published
    for client in clients:
        resets = [event for event in client.events if event.event == "reset"]
        assert not resets, f"{client.channels}: {resets[:3]}"
        want = sorted((i for c in client.channels for i in truth[c]), key=_order)
        got = client.ids()
        at = next((n for n, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), 0)
        assert got == want, (
            f"client of {client.channels} ({len(client.visits)} connections): "
            f"{len(got) - len(set(got))} duplicates; {divergence(got, want)}\n"
            f"{client.around(at)}\nchannels: "
            + str({c: [i for i in truth[c] if i in want[at - 2 : at + 6]] for c in client.channels})
        )


async def churn(
    nodes: list[Node], redis_url: str, clients: list[Client], truth: dict[str, list[str]]
) -> None:
    """CHURN_SECONDS of publishes, pub/sub kills and reconnecting `clients`; then each
    client resumes until it has its channels' newest message. `truth` gets every id."""
    churning = asyncio.Event()
    churning.set()

    async def publish() -> None:
        rng = random.Random(1)
        async with RedisPublisher.from_url(redis_url) as publisher:
            n = 0
            while churning.is_set():
                channel = rng.choice(CHANNELS)
                truth[channel].append(await publisher.publish(channel, f"{channel}{n}"))
                n += 1
                await asyncio.sleep(PUBLISH_EVERY)  # (the publish rate)

    async def kill_pubsub() -> None:
        rng = random.Random(2)
        admin = redis.Redis.from_url(redis_url)
        kills = 0
        try:
            while churning.is_set():
                await asyncio.sleep(rng.uniform(0.1, 0.3))  # (the fault's rhythm)
                await admin.client_kill_filter(_type="pubsub", skipme=True)
                kills += 1
        finally:
            await admin.aclose()
        assert kills > 10

    async def reconnect(client: Client, session: aiohttp.ClientSession) -> None:
        while churning.is_set():
            node = client.rng.choice(nodes)
            await client.visit(session, node.url, client.rng.uniform(0.01, 0.3))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        work = [
            asyncio.create_task(publish()),
            asyncio.create_task(kill_pubsub()),
            *(asyncio.create_task(reconnect(client, session)) for client in clients),
        ]
        await asyncio.sleep(CHURN_SECONDS)  # (how long the churn lasts)
        churning.clear()
        await asyncio.gather(*work)
        for client in clients:
            newest = max((truth[c][-1] for c in client.channels if truth[c]), key=_order)
            await client.finish(session, nodes[0], newest)


def _order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)
