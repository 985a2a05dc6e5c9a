"""Three `broadcaster serve` processes on one real Redis, as users run them."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack

import aiohttp
import pytest

from tests.support.client import Subscriber, subscribe
from tests.support.processes import Node, RedisServer
from tests.support.publish import publish
from tests.support.sse import Event
from tests.support.wait import eventually

TOKEN = "e2e-token"


@pytest.fixture
def cluster(redis_server: RedisServer, start_node: Callable[..., Node]) -> list[Node]:
    return [start_node(redis_server.url, publish_token=TOKEN) for _ in range(3)]


async def cli_publish(*args: str, **env: str) -> tuple[int, str, str]:
    """Run `broadcaster publish`; return its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broadcaster",
        "publish",
        *args,
        env={"PATH": "/usr/bin:/bin", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode().strip(), err.decode().strip()


async def test_every_publish_path_reaches_clients_on_every_node(
    cluster: list[Node], redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    async with AsyncExitStack() as stack:
        subs: list[Subscriber] = [
            await stack.enter_async_context(subscribe(session, node.url, ["news"]))
            for node in cluster
            for _ in range(2)
        ]
        redis_server.cli("PUBLISH", "sse:news", "from redis-cli")
        http_id = await publish(
            session, cluster[2].url, "news", "over http\nto node 3", token=TOKEN
        )
        code, cli_id, _ = await cli_publish(
            "news", "from the cli", "--event", "note", BROADCASTER_REDIS_URL=redis_server.url
        )
        assert code == 0
        expected = [
            Event("from redis-cli"),
            Event("over http\nto node 3", "message", http_id),
            Event("from the cli", "note", cli_id),
        ]
        for sub in subs:
            assert await sub.wait_for(3) == expected


async def test_one_subscription_per_node_gone_with_the_last_client(
    cluster: list[Node], redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    def numsub() -> int:
        return int(redis_server.cli("PUBSUB", "NUMSUB", "sse:room").split()[1])

    async with AsyncExitStack() as everyone:
        for node in cluster:
            for _ in range(4):
                await everyone.enter_async_context(subscribe(session, node.url, ["room"]))
        assert numsub() == 3
        async with subscribe(session, cluster[0].url, ["room"]):
            assert numsub() == 3
    # Every client has left: each node drops its one subscription.

    async def none_left() -> bool:
        return numsub() == 0

    await eventually(none_left, 10, "subscriptions to disappear")


async def test_one_node_leaving_keeps_the_others_subscribed(
    cluster: list[Node], redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    def numsub() -> int:
        return int(redis_server.cli("PUBSUB", "NUMSUB", "sse:solo").split()[1])

    async with subscribe(session, cluster[1].url, ["solo"]) as stays:
        async with subscribe(session, cluster[0].url, ["solo"]):
            assert numsub() == 2

        async def one_left() -> bool:
            return numsub() == 1

        await eventually(one_left, 10, "node 1's subscription to go")
        redis_server.cli("PUBLISH", "sse:solo", "still here")
        assert await stays.wait_for(1) == [Event("still here")]


async def test_embedded_node_publishes_over_http_from_the_cli(
    start_node: Callable[..., Node], session: aiohttp.ClientSession
) -> None:
    node = start_node(publish_token=TOKEN)
    async with subscribe(session, node.url, ["solo"]) as sub:
        code, id_, _ = await cli_publish(
            "solo", "hi", "--url", node.url, BROADCASTER_PUBLISH_TOKEN=TOKEN
        )
        assert code == 0
        assert await sub.wait_for(1) == [Event("hi", "message", id_)]
    code, _, err = await cli_publish(
        "solo", "x", "--url", node.url, BROADCASTER_PUBLISH_TOKEN="wrong"
    )
    assert code != 0
    assert err == "broadcaster: publish refused: 401: missing or wrong bearer token"
