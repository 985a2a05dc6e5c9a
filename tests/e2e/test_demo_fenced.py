"""The demo fenced off, on real node processes: the holes a first deployment would hit."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from tests.support.client import subscribe
from tests.support.processes import Node, RedisServer
from tests.support.publish import bearer
from tests.support.tokens import SECRET, token
from tests.support.wait import eventually


async def test_with_jwt_nobody_injects_through_the_demo(start_node: Callable[..., Node]) -> None:
    # The reported hole: a JWT node on the embedded broker took a token-less demo ask
    # into "payments" (202), and its subscribers got thinking/token/done events.
    node = start_node(jwt_secret=SECRET, demo_token_delay="0")
    reader = bearer(token(subscribe=["payments", "demo:*"]))
    writer = bearer(token(publish=["payments", "demo:mine"]))
    async with (
        aiohttp.ClientSession() as session,
        subscribe(session, node.url, ["payments", "demo:mine"], reader) as sub,
    ):
        for body, headers, status in (
            # (No token: refused before the body, so before its channel, is even read.)
            ({"channel": "payments", "prompt": "x"}, {}, 401),
            ({"channel": "payments", "prompt": "x"}, writer, 403),
            ({"channel": "demo:mine", "prompt": "x"}, {}, 401),
            ({"channel": "demo:mine", "prompt": "x"}, bearer(token(publish=["demo:other"])), 403),
        ):
            async with session.post(f"{node.url}/demo/ask", json=body, headers=headers) as answer:
                assert answer.status == status, (body, headers, await answer.text())
        async with session.post(
            f"{node.url}/publish", json={"channel": "payments", "data": "x"}
        ) as answer:
            assert answer.status == 401
        async with session.post(
            f"{node.url}/publish", json={"channel": "payments", "data": "marker"}, headers=writer
        ) as answer:
            assert answer.status == 200
        # Nothing came before the marker: every refused ask published nothing.
        first = (await sub.wait_for(1))[0]
        assert (first.event, first.data) == ("message", "marker")
        body = {"channel": "demo:mine", "prompt": "x"}
        async with session.post(f"{node.url}/demo/ask", json=body, headers=writer) as answer:
            assert answer.status == 202
        events = await sub.wait_for(3)
        assert events[1].event == "thinking"


async def test_demo_off_writes_nothing_to_redis(
    start_node: Callable[..., Node], redis_server: RedisServer
) -> None:
    off = start_node(redis_server.url, demo="off", publish_token="t", node_id="off")
    before = redis_server.cli("--scan")
    async with aiohttp.ClientSession() as session:
        for headers in ({}, bearer("t")):
            body = {"channel": "demo:x", "prompt": "x"}
            async with session.post(f"{off.url}/demo/ask", json=body, headers=headers) as answer:
                assert answer.status == 403
                assert "BROADCASTER_DEMO=off" in await answer.text()
        for path in ("/", "/dashboard", "/cluster"):
            async with session.get(f"{off.url}{path}") as answer:
                assert answer.status == 404, path
    assert redis_server.cli("--scan") == before
    assert "cmdstat_rpush" not in redis_server.cli("INFO", "commandstats")
    # A node with the demo on reports its counters every second; once it has, the node
    # with the demo off (up for longer) has still reported nothing.
    start_node(redis_server.url, node_id="on")

    async def reported() -> bool:
        return redis_server.cli("HKEYS", "sse:nodes").split() == ["on"]

    await eventually(reported, 10, "the demo node to report, and only it")
    # (Besides each node's presence liveness, which is the node's, demo or not.)
    keys = redis_server.cli("--scan").split()
    presence = ("sse:alive:", "sse:owned:", "sse:processes")  # the node's own presence keys
    assert [key for key in keys if not key.startswith(presence)] == ["sse:nodes"]
