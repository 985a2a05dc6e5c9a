"""Who follows a channel (`GET /presence?clients=1`) and its `join` / `leave` events
(`BROADCASTER_PRESENCE_EVENTS`), on both brokers and across nodes: a sub's first
connection in and its last out, never an anonymous subscriber, never a channel that did
not ask; a killed node's subscribers leave."""

from __future__ import annotations

import contextlib
import json
import signal
from typing import Any

import aiohttp
import pytest

from broadcaster.core.identity import MAX_INFO
from tests.support.client import Subscriber, subscribe
from tests.support.nodes import StartApp, StartNode
from tests.support.processes import RedisServer
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.sse import Event
from tests.support.tokens import SECRET, token
from tests.support.wait import eventually


def watching() -> dict[str, str]:
    """The headers of an anonymous subscriber (a token without `sub`) who may also ask."""
    return {"Authorization": f"Bearer {token(subscribe=['room', 'quiet'], presence=['*'])}"}


def of(sub: str, **info: Any) -> dict[str, str]:
    """The headers of a subscriber who is `sub` (with an `info` claim, when given)."""
    claims: dict[str, Any] = {"subscribe": ["room", "quiet"], "sub": sub}
    if info:
        claims["info"] = info
    return {"Authorization": f"Bearer {token(**claims)}"}


def said(events: list[Event]) -> list[tuple[str, Any]]:
    """The presence events among `events`, as (kind, data)."""
    return [(e.event, json.loads(e.data)) for e in events if e.event in ("join", "leave")]


async def listed(session: aiohttp.ClientSession, base: str, channel: str) -> dict[str, Any]:
    query = {"channel": channel, "clients": "1"}
    async with session.get(f"{base}/presence", params=query, headers=watching()) as answer:
        assert answer.status == 200, await answer.text()
        body: dict[str, Any] = await answer.json()
        return body


async def clients_become(
    session: aiohttp.ClientSession, base: str, channel: str, expected: dict[str, int]
) -> None:
    """Wait until `channel`'s identified subscribers, with their connections, are these."""

    async def probe() -> bool:
        body = await listed(session, base, channel)
        return {c["sub"]: c["connections"] for c in body["clients"]} == expected

    await eventually(probe, 15, f"clients {expected} of {channel} at {base}")


async def said_becomes(watcher: Subscriber, expected: list[tuple[str, Any]]) -> None:
    """Wait for the watcher's presence events to be `expected` (and no more, so far)."""

    async def probe() -> bool:
        return len(said(watcher.events)) >= len(expected)

    await eventually(probe, 15, f"presence events {expected}")
    assert said(watcher.events) == expected


async def test_first_in_last_out_and_never_anonymous(
    start_broker_app: StartApp, session: aiohttp.ClientSession
) -> None:
    base = await start_broker_app(jwt_secret=SECRET, presence_events="ro*")
    async with contextlib.AsyncExitStack() as stack:
        watcher = await stack.enter_async_context(subscribe(session, base, ["room"], watching()))
        first = contextlib.AsyncExitStack()
        await first.enter_async_context(subscribe(session, base, ["room"], of("ana", n="Ana")))
        ana = {"sub": "ana", "info": {"n": "Ana"}}
        await said_becomes(watcher, [("join", ana)])
        last = contextlib.AsyncExitStack()
        await last.enter_async_context(subscribe(session, base, ["room"], of("ana", n="Ana")))
        await clients_become(session, base, "room", {"ana": 2})
        await first.aclose()
        await clients_become(session, base, "room", {"ana": 1})
        # An anonymous subscriber (a token without `sub`) comes and goes unannounced.
        async with subscribe(session, base, ["room"], watching()):
            pass
        # Bob's join comes after every change above was announced (or not): nothing for
        # Ana's second connection, her first one's leave, or the anonymous one.
        async with subscribe(session, base, ["room"], of("bob")):
            bob = {"sub": "bob", "info": None}
            await said_becomes(watcher, [("join", ana), ("join", bob)])
            await last.aclose()
            await said_becomes(watcher, [("join", ana), ("join", bob), ("leave", ana)])
        await said_becomes(watcher, [("join", ana), ("join", bob), ("leave", ana), ("leave", bob)])
        assert all(e.id == "" for e in watcher.events)  # live only: no id


async def test_clients_are_listed_by_sub_a_page_at_a_time(
    start_broker_app: StartApp, session: aiohttp.ClientSession
) -> None:
    base = await start_broker_app(jwt_secret=SECRET)
    async with contextlib.AsyncExitStack() as stack:
        for sub in ("cy", "ana", "bo", "ana"):
            await stack.enter_async_context(subscribe(session, base, ["room"], of(sub, x=1)))
        await stack.enter_async_context(subscribe(session, base, ["room"], watching()))
        await clients_become(session, base, "room", {"ana": 2, "bo": 1, "cy": 1})
        pages, after = [], None
        while True:
            query = {"channel": "room", "clients": "1", "limit": "2"} | (
                {"after": after} if after else {}
            )
            async with session.get(f"{base}/presence", params=query, headers=watching()) as got:
                body = await got.json()
            pages.append([(c["sub"], c["connections"], c["info"]) for c in body["clients"]])
            assert body["channels"] == {"room": 5}  # every subscriber, anonymous too
            after = body["next"]
            if after is None:
                break
        assert pages == [[("ana", 2, {"x": 1}), ("bo", 1, {"x": 1})], [("cy", 1, {"x": 1})]]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"channel": ["a", "b"], "clients": "1"}, "clients=1 lists one channel at a time"),
        ({"channel": "a", "clients": "yes"}, "clients must be 0 or 1"),
        ({"channel": "a", "clients": "1", "limit": "0"}, "limit must be a whole number"),
        ({"channel": "a", "clients": "1", "limit": "1001"}, "limit must be a whole number"),
        ({"channel": "a", "clients": "1", "after": "x" * 300}, "after must be a sub"),
    ],
)
async def test_bad_listings_get_one_line_400s(
    start_app: StartApp, session: aiohttp.ClientSession, query: dict[str, Any], reason: str
) -> None:
    base = await start_app()
    params = [(k, v) for k, vs in query.items() for v in ([vs] if isinstance(vs, str) else vs)]
    async with session.get(f"{base}/presence", params=params) as answer:
        text = await answer.text()
    assert (answer.status, text.startswith(reason), text.count("\n")) == (400, True, 1), text


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"sub": 7}, "invalid token: Subject must be a string"),  # (PyJWT)
        ({"sub": ""}, "invalid token: sub must be a string"),
        ({"sub": "a\x00b"}, "invalid token: sub must be a string"),
        ({"sub": "ana", "info": "x" * MAX_INFO}, f"invalid token: info is over {MAX_INFO}"),
    ],
)
async def test_a_sub_or_info_presence_cannot_hold_is_refused(
    start_app: StartApp, session: aiohttp.ClientSession, claims: dict[str, Any], reason: str
) -> None:
    base = await start_app(jwt_secret=SECRET)
    headers = {"Authorization": f"Bearer {token(subscribe=['room'], publish=['room'], **claims)}"}
    async with session.get(f"{base}/events", params={"channel": "room"}, headers=headers) as got:
        text = await got.text()
    assert (got.status, text.startswith(reason)) == (401, True), text
    # Presence's bounds are for subscribers: the same token still publishes.
    body = {"channel": "room", "data": "x"}
    async with session.post(f"{base}/publish", json=body, headers=headers) as got:
        assert got.status == (401 if claims["sub"] == 7 else 200), await got.text()


async def test_a_sub_on_two_nodes_joins_once_and_leaves_once(
    redis_server: RedisServer, start_app: StartApp, session: aiohttp.ClientSession
) -> None:
    settings = {"redis_url": redis_server.url, "jwt_secret": SECRET, "presence_events": "room"}
    one = await start_app(**settings, node_id="one")
    two = await start_app(**settings, node_id="two")
    async with contextlib.AsyncExitStack() as stack:
        watcher = await stack.enter_async_context(subscribe(session, two, ["room"], watching()))
        on_one = contextlib.AsyncExitStack()
        await on_one.enter_async_context(subscribe(session, one, ["room"], of("ana")))
        ana = {"sub": "ana", "info": None}
        await said_becomes(watcher, [("join", ana)])
        on_two = contextlib.AsyncExitStack()
        await on_two.enter_async_context(subscribe(session, two, ["room"], of("ana")))
        for base in (one, two):
            await clients_become(session, base, "room", {"ana": 2})  # one entry, both nodes
        await on_one.aclose()
        await clients_become(session, two, "room", {"ana": 1})
        # The quiet channel asked for no events: Ana's connection there is only listed.
        async with subscribe(session, one, ["quiet"], of("ana")):
            await clients_become(session, two, "quiet", {"ana": 1})
        await on_two.aclose()
        await said_becomes(watcher, [("join", ana), ("leave", ana)])
        for base in (one, two):
            await clients_become(session, base, "room", {})


@pytest.mark.slow  # (about 8 s: the liveness bound, then a sweep)
async def test_a_killed_nodes_subscribers_leave(
    redis_server: RedisServer, start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    settings = {"jwt_secret": SECRET, "presence_events": "room"}
    survivor = start_node(redis_server.url, **settings)
    doomed = start_node(redis_server.url, **settings)
    async with subscribe(session, survivor.url, ["room"], watching()) as watcher:
        held = await session.get(
            f"{doomed.url}/events", params={"channel": "room"}, headers=of("ana")
        )
        try:
            ana = {"sub": "ana", "info": None}
            await said_becomes(watcher, [("join", ana)])
            doomed.signal(signal.SIGKILL)
            await said_becomes(watcher, [("join", ana), ("leave", ana)])
            await clients_become(session, survivor.url, "room", {})
        finally:
            held.close()


async def test_on_a_redis_cluster_a_sub_joins_and_leaves_once_across_nodes(
    clean_redis_cluster: RedisClusterGroup, start_app: StartApp, session: aiohttp.ClientSession
) -> None:
    settings = {"redis_url": clean_redis_cluster.url, "jwt_secret": SECRET}
    one = await start_app(**settings, presence_events="{r}*", node_id="one")
    two = await start_app(**settings, presence_events="{r}*", node_id="two")
    channel = "{r}room"  # (its keys and events in the `{r}` slot, with SPUBLISH)
    headers = {"Authorization": f"Bearer {token(subscribe=['{r}*'], presence=['*'])}"}

    def ana() -> dict[str, str]:
        return {"Authorization": f"Bearer {token(subscribe=['{r}*'], sub='ana')}"}

    async with subscribe(session, two, [channel], headers) as watcher:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(subscribe(session, one, [channel], ana()))
            await stack.enter_async_context(subscribe(session, two, [channel], ana()))
            query = {"channel": channel, "clients": "1"}

            async def both() -> bool:
                async with session.get(f"{one}/presence", params=query, headers=headers) as got:
                    body: dict[str, Any] = await got.json()
                return bool(body["clients"] == [{"sub": "ana", "info": None, "connections": 2}])

            await eventually(both, 15, "ana listed with her two connections")
        said_ana = {"sub": "ana", "info": None}
        await said_becomes(watcher, [("join", said_ana), ("leave", said_ana)])
