"""Two nodes in this process on one real redis-server: fan-out and subscription counts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
import pytest
import redis.asyncio as redis

from broadcaster.client import RedisPublisher
from broadcaster.core.ids import EventId
from tests.support.client import subscribe
from tests.support.nodes import StartApp
from tests.support.processes import RedisServer
from tests.support.publish import publish
from tests.support.wait import eventually


@pytest.fixture
async def nodes(redis_server: RedisServer, start_app: StartApp) -> AsyncIterator[list[str]]:
    yield [await start_app(redis_url=redis_server.url, publish_token="t") for _ in range(2)]


async def numsub(redis_server: RedisServer, channel: str) -> int:
    async with redis.Redis.from_url(redis_server.url) as client:
        return int((await client.pubsub_numsub(channel))[0][1])


async def test_every_publish_path_reaches_every_node(
    nodes: list[str], session: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    async with AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(subscribe(session, url, ["news"])) for url in nodes]
        redis_server.cli("PUBLISH", "sse:news", "from redis-cli")
        await publish(session, nodes[1], "news", "over http", event="update")
        async with RedisPublisher.from_url(redis_server.url) as publisher:
            await publisher.publish("news", "from python", event="note")
        for sub in subs:
            events = await sub.wait_for(3)
            assert [(e.data, e.event) for e in events] == [
                ("from redis-cli", "message"),
                ("over http", "update"),
                ("from python", "note"),
            ]
            # Raw PUBLISH is live-only (no id); the durable paths carry increasing ids.
            ids = [EventId.parse(e.id) for e in events]
            assert events[0].id == "" and ids[1] is not None and ids[2] is not None
            assert ids[1] < ids[2]


async def test_one_redis_subscription_per_node_however_many_clients(
    nodes: list[str], session: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    async with AsyncExitStack() as stack:
        for url in nodes:
            for _ in range(5):
                await stack.enter_async_context(subscribe(session, url, ["busy", "other"]))
        assert await numsub(redis_server, "sse:busy") == 2
        assert await numsub(redis_server, "sse:other") == 2

    async def gone() -> bool:
        return await numsub(redis_server, "sse:busy") == 0

    await eventually(gone, 10, "the last clients' subscriptions to go")


async def test_non_utf8_raw_publish_is_repaired_counted_and_harmless(
    nodes: list[str], session: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    async with (
        subscribe(session, nodes[0], ["bin"]) as sub,
        redis.Redis.from_url(redis_server.url) as client,
    ):
        await client.publish("sse:bin", b"ok \xff\xfe end")
        await client.publish("sse:#bin", b"\x00bc1\nbroken envelope")  # durable channel
        await client.publish("sse:bin", "after")
        events = await sub.wait_for(2)
        assert [e.data for e in events] == ["ok \ufffd\ufffd end", "after"]
        async with session.get(f"{nodes[0]}/metrics") as answer:
            text = await answer.text()
        assert 'broadcaster_messages_malformed_total{reason="utf8"} 1.0' in text
        assert 'broadcaster_messages_malformed_total{reason="envelope"} 1.0' in text
