"""`GET /presence`: subscriber counts per channel, the node's own on the embedded broker,
every live node's on Redis (one Redis, a Redis Cluster); a dead process's counts vanish
within the bound."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from broadcaster.brokers.redis.client import connect, connect_publisher
from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.brokers.redis.presence import RedisPresence
from tests.support.client import subscribe
from tests.support.nodes import StartApp, StartNode
from tests.support.processes import RedisServer
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.wait import eventually


async def presence(
    session: aiohttp.ClientSession, base: str, *channels: str
) -> tuple[int, dict[str, Any]]:
    params = [("channel", channel) for channel in channels]
    async with session.get(f"{base}/presence", params=params) as answer:
        body = await answer.json() if answer.status == 200 else {"text": await answer.text()}
        return answer.status, body


async def counts_become(
    session: aiohttp.ClientSession, base: str, expected: dict[str, int], timeout: float = 10
) -> None:
    async def probe() -> bool:
        status, body = await presence(session, base, *expected)
        return status == 200 and body["channels"] == expected

    await eventually(probe, timeout, f"presence {expected} at {base}")


async def test_the_embedded_broker_counts_the_nodes_own_subscribers(
    start_app: StartApp, session: aiohttp.ClientSession
) -> None:
    base = await start_app()
    async with contextlib.AsyncExitStack() as stack:
        for channels in (["a"], ["a"], ["a", "b"]):
            await stack.enter_async_context(subscribe(session, base, channels))
        status, body = await presence(session, base, "a", "b", "c")
        assert (status, body) == (200, {"channels": {"a": 3, "b": 1, "c": 0}, "scope": "node"})
    await counts_become(session, base, {"a": 0, "b": 0})


async def test_two_nodes_on_one_redis_converge_after_joins_and_leaves(
    redis_server: RedisServer, start_app: StartApp, session: aiohttp.ClientSession
) -> None:
    one = await start_app(redis_url=redis_server.url, node_id="one")
    two = await start_app(redis_url=redis_server.url, node_id="two")
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(subscribe(session, one, ["a", "b"]))
        await stack.enter_async_context(subscribe(session, two, ["a"]))
        leaving = contextlib.AsyncExitStack()
        await leaving.enter_async_context(subscribe(session, two, ["a"]))
        for base in (one, two):
            await counts_become(session, base, {"a": 3, "b": 1, "c": 0})
        assert (await presence(session, one, "a"))[1]["scope"] == "cluster"
        await leaving.aclose()
        for base in (one, two):
            await counts_become(session, base, {"a": 2, "b": 1})
    for base in (one, two):
        await counts_become(session, base, {"a": 0, "b": 0})
    # Every field was removed on the last leave: nothing but the liveness keys is left.
    client = connect(redis_server.url)
    try:
        assert await client.keys("sse:presence:*") == []
    finally:
        await client.aclose()


async def test_a_dead_process_vanishes_within_the_bound(redis_server: RedisServer) -> None:
    keys = KeySpace("sse:")
    client = connect(redis_server.url)
    dies = RedisPresence(client, keys, "dies", alive_ms=300)
    lives = RedisPresence(client, keys, "lives")
    try:
        for store, count in ((dies, 2), (lives, 1)):
            assert not await store.refresh()  # (the first: it was not alive before)
            await store.write({"x": count, "y": count})
        assert await lives.read(["x", "y", "z"]) == {"x": 3, "y": 3, "z": 0}
        # `dies` stops refreshing, as a killed process does.

        async def gone() -> bool:
            return await lives.read(["x", "y"]) == {"x": 1, "y": 1}

        await eventually(gone, 5, "the dead process's counts gone")
        assert await client.hkeys("sse:presence:x") == [lives.process.encode()]  # removed
        # Back after a lapse, it learns it lapsed, and takes a new name (its old one is a
        # dead process's, swept).
        old_name = dies.process
        assert not await dies.refresh()
        assert dies.process != old_name
        assert await dies.refresh()
    finally:
        await client.aclose()


async def test_counts_on_a_redis_cluster_live_in_their_channels_slots(
    clean_redis_cluster: RedisClusterGroup,
) -> None:
    client = connect_publisher(clean_redis_cluster.url)
    assert isinstance(client, aioredis.RedisCluster)
    keys = KeySpace("sse:", clustered=True)
    # Channels of many groups (so many slots and shards), and two of one `{tag}`.
    channels = [f"room:{n}" for n in range(20)] + ["{t}a", "{t}b"]
    stores = [RedisPresence(client, keys, f"p{n}", alive_ms=60_000) for n in range(3)]
    try:
        for n, store in enumerate(stores):
            await store.refresh()
            await store.write(dict.fromkeys(channels, n + 1))
        assert await stores[0].read(channels) == dict.fromkeys(channels, 6)
        owner = clean_redis_cluster.owner
        assert owner("sse:{t}:presence:{t}a") is owner("sse:{t}:meta")
        assert owner("sse:{room:3}:presence:room:3") is owner("sse:{room:3}:meta")
        await stores[1].remove(channels)
        assert await stores[0].read(channels) == dict.fromkeys(channels, 4)
    finally:
        await client.aclose()


@pytest.mark.slow  # (about 6 s: the bound itself)
async def test_a_node_killed_with_sigkill_vanishes_within_the_bound(
    redis_server: RedisServer, start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    survivor, doomed = start_node(redis_server.url), start_node(redis_server.url)
    held = [await session.get(f"{doomed.url}/events", params={"channel": "a"}) for _ in range(2)]
    try:
        await counts_become(session, survivor.url, {"a": 2})
        doomed.signal(signal.SIGKILL)
        killed = asyncio.get_running_loop().time()
        await counts_become(session, survivor.url, {"a": 0})
        # The bound is 5 s after its last liveness refresh, which came before its death.
        assert asyncio.get_running_loop().time() - killed < 5.5
    finally:
        for response in held:
            response.close()


async def test_without_redis_presence_is_refused_with_503(
    redis_server: RedisServer, start_app: StartApp, session: aiohttp.ClientSession
) -> None:
    base = await start_app(redis_url=redis_server.url)
    redis_server.kill()
    status, body = await presence(session, base, "a")
    assert status == 503
    assert body["text"].startswith("broker unavailable") and body["text"].count("\n") == 1


async def test_the_workers_of_a_node_count_together(
    redis_server: RedisServer, start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    node = start_node(redis_server.url, workers="2")
    held = [await session.get(f"{node.url}/events", params={"channel": "w"}) for _ in range(6)]
    try:
        # Whichever worker answers, it counts the streams of both.
        for _ in range(4):
            await counts_become(session, node.url, {"w": 6})
        client = connect(redis_server.url)
        try:
            fields = await client.hgetall("sse:presence:w")
        finally:
            await client.aclose()
        # A field per worker that holds some (node id "node-<port>/<worker>", pid, random).
        assert sum(int(count) for count in fields.values()) == 6
        assert {
            (f.decode() if isinstance(f, bytes) else f).split(":")[0].rpartition("/")[0]
            for f in fields
        } == {f"node-{node.port}"}
    finally:
        for response in held:
            response.close()
    await counts_become(session, node.url, {"w": 0})
