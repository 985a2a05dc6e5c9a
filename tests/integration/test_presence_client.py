"""`presence()` of the HTTP publishers, async and sync, against a real node: the same
counts as `GET /presence`, its refusals as the publish errors, and an unreachable node as
the connection error a publish gets."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest

from broadcaster import (
    HttpPublisher,
    Presence,
    PresenceClient,
    PublishError,
    SyncHttpPublisher,
)
from broadcaster.client.errors import Unavailable
from broadcaster.cluster.processes import free_port
from tests.support.client import subscribe
from tests.support.nodes import StartApp
from tests.support.processes import RedisServer
from tests.support.tokens import SECRET, token

CONNECTION_ERRORS = {"async": aiohttp.ClientConnectionError, "sync": httpx.TransportError}


class Reader:
    """One of the two publishers, behind one async `presence` (the sync one in a thread,
    as the node runs in this test's event loop)."""

    def __init__(self, kind: str, base: str, token: str = "", retries: int = 3) -> None:
        self.kind = kind
        self.publisher: HttpPublisher | SyncHttpPublisher
        if kind == "async":
            self.publisher = HttpPublisher(base, token, retries=retries)
        else:
            self.publisher = SyncHttpPublisher(base, token, retries=retries)

    async def presence(self, *args: Any, **kwargs: Any) -> Presence:
        if isinstance(self.publisher, SyncHttpPublisher):
            call = functools.partial(self.publisher.presence, *args, **kwargs)
            return await asyncio.to_thread(call)
        return await self.publisher.presence(*args, **kwargs)

    async def publish(self, channel: str, data: str) -> str:
        if isinstance(self.publisher, SyncHttpPublisher):
            return await asyncio.to_thread(self.publisher.publish, channel, data)
        return await self.publisher.publish(channel, data)

    async def close(self) -> None:
        if isinstance(self.publisher, SyncHttpPublisher):
            self.publisher.close()
        else:
            await self.publisher.aclose()


@pytest.fixture(params=["async", "sync"])
async def reader(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Makes readers of the kind under test (`reader(base, token, retries)`); closes them."""
    made: list[Reader] = []

    def make(base: str, token: str = "", retries: int = 3) -> Reader:
        made.append(Reader(request.param, base, token, retries))
        return made[-1]

    yield make
    for one in made:
        await one.close()


async def endpoint(session: aiohttp.ClientSession, base: str, *channels: str) -> Any:
    params = [("channel", channel) for channel in channels]
    async with session.get(f"{base}/presence", params=params) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def test_counts_are_the_endpoints(
    start_app: StartApp, session: aiohttp.ClientSession, reader: Any
) -> None:
    base = await start_app()
    node = reader(base)
    async with contextlib.AsyncExitStack() as stack:
        for channels in (["a"], ["a"], ["a", "b"]):
            await stack.enter_async_context(subscribe(session, base, channels))
        answered = await endpoint(session, base, "a", "b", "c")
        presence = await node.presence(["a", "b", "c"])
        assert presence == Presence({"a": 3, "b": 1, "c": 0}, "node", None, None)
        assert presence.as_json() == answered
        assert (await node.presence("a")).counts == {"a": 3}  # one channel, as a str


async def test_refusals_raise_the_publish_errors_with_the_nodes_reason(
    start_app: StartApp, reader: Any
) -> None:
    base = await start_app(jwt_secret=SECRET)
    rooms = reader(base, token(subscribe=["room:*"]))
    assert (await rooms.presence(["room:1", "room:2"])).counts == {"room:1": 0, "room:2": 0}
    with pytest.raises(PublishError) as refused:
        await rooms.presence(["room:1", "other"])
    assert (refused.value.status, refused.value.reason) == (
        403,
        "token does not allow presence on channel 'other'",
    )
    assert not isinstance(refused.value, Unavailable)
    with pytest.raises(PublishError) as refused:
        await reader(base).presence("room:1")
    assert refused.value.status == 401
    assert refused.value.reason.startswith("missing token")
    with pytest.raises(PublishError) as refused:
        await rooms.presence("bad channel")
    assert refused.value.status == 400
    assert refused.value.reason.startswith("channel 'bad channel' may contain only")
    # A token for presence alone, without the right to subscribe.
    counting = reader(base, token(presence=["other"]))
    assert (await counting.presence("other")).counts == {"other": 0}


async def test_a_node_without_redis_is_unavailable(
    redis_server: RedisServer, start_app: StartApp, reader: Any
) -> None:
    base = await start_app(redis_url=redis_server.url)
    node = reader(base, retries=1)
    assert (await node.presence("a")).scope == "cluster"
    redis_server.kill()
    with pytest.raises(Unavailable) as unavailable:
        await node.presence("a")
    assert unavailable.value.status == 503
    assert unavailable.value.reason.startswith("broker unavailable")


async def test_an_unreachable_node_is_the_connection_error_a_publish_gets(reader: Any) -> None:
    node = reader(f"http://127.0.0.1:{free_port()}", retries=1)
    with pytest.raises(CONNECTION_ERRORS[node.kind]):
        await node.presence("a")
    with pytest.raises(CONNECTION_ERRORS[node.kind]):
        await node.publish("a", "x")


async def test_bad_arguments_are_refused_before_anything_is_sent(reader: Any) -> None:
    node = reader(f"http://127.0.0.1:{free_port()}")
    for args, kwargs in (
        ([[]], {}),
        ([["a", "b"]], {"clients": True}),
        (["a"], {"limit": 5}),
        (["a"], {"after": "ana"}),
    ):
        with pytest.raises(ValueError):
            await node.presence(*args, **kwargs)


async def test_clients_pages_the_identified_subscribers(
    start_app: StartApp, session: aiohttp.ClientSession, reader: Any
) -> None:
    base = await start_app(jwt_secret=SECRET)
    counting = token(presence=["room"])
    node = reader(base, counting)
    ana = token(subscribe=["room"], sub="ana", info={"name": "Ana"})
    bob = token(subscribe=["room"], sub="bob")
    async with contextlib.AsyncExitStack() as stack:
        for held in (ana, ana, bob):
            headers = {"Authorization": f"Bearer {held}"}
            await stack.enter_async_context(subscribe(session, base, ["room"], headers))
        first = await node.presence("room", clients=True, limit=1)
        assert first.counts == {"room": 3}
        assert first.clients == (PresenceClient("ana", {"name": "Ana"}, 2),)
        assert first.next is not None
        rest = await node.presence("room", clients=True, limit=10, after=first.next)
        assert (rest.clients, rest.next) == ((PresenceClient("bob", None, 1),), None)
        # What the endpoint answers, given back as it was.
        query = {"channel": "room", "clients": "1", "limit": "1"}
        headers = {"Authorization": f"Bearer {counting}"}
        async with session.get(f"{base}/presence", params=query, headers=headers) as answer:
            assert answer.status == 200
            assert first.as_json() == await answer.json()
