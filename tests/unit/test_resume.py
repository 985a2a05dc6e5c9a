"""Last-Event-ID resume on one node with the embedded broker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from broadcaster.app import create_app
from broadcaster.settings import Settings
from tests.support.client import subscribe
from tests.support.sse import Event

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": "Bearer t"}


async def node(aiohttp_client: MakeClient, **settings: Any) -> tuple[Client, str]:
    client = await aiohttp_client(create_app(Settings(publish_token="t", **settings)))
    return client, str(client.make_url("")).rstrip("/")


async def publish(client: Client, channel: str, data: str) -> str:
    answer = await client.post("/publish", json={"channel": channel, "data": data}, headers=AUTH)
    assert answer.status == 200
    return str((await answer.json())["id"])


async def test_resume_replays_every_channel_in_order_then_goes_live(
    aiohttp_client: MakeClient,
) -> None:
    client, base = await node(aiohttp_client)
    ids = [
        await publish(client, channel, data)
        for channel, data in [
            ("a", "a1"),
            ("b", "b1"),
            ("a", "a2"),
            ("c", "c1"),
            ("b", "b2"),
            ("a", "a3"),
        ]
    ]
    headers = {"Last-Event-ID": ids[1]}
    async with subscribe(client.session, base, ["a", "b"], headers=headers) as sub:
        live = await publish(client, "b", "b3")
        assert await sub.wait_for(4) == [
            Event("a2", id=ids[2]),
            Event("b2", id=ids[4]),
            Event("a3", id=ids[5]),
            Event("b3", id=live),
        ]


async def test_a_reloaded_page_resumes_with_the_query_parameter(aiohttp_client: MakeClient) -> None:
    client, base = await node(aiohttp_client)
    first = await publish(client, "a", "one")
    second = await publish(client, "a", "two")
    async with subscribe(client.session, f"{base}", ["a"], query={"lastEventId": first}) as sub:
        assert await sub.wait_for(1) == [Event("two", id=second)]


async def test_trimmed_history_starts_with_a_reset_then_live(aiohttp_client: MakeClient) -> None:
    client, base = await node(aiohttp_client, history_maxlen=2)
    ids = [await publish(client, "a", f"m{n}") for n in range(5)]
    async with subscribe(
        client.session, base, ["a", "b"], headers={"Last-Event-ID": ids[0]}
    ) as sub:
        live = await publish(client, "a", "live")
        events = await sub.wait_for(2)
    reset, after = events
    assert reset.event == "reset"
    assert orjson.loads(reset.data) == {"channels": ["a"], "reason": "trimmed"}
    assert after == Event("live", id=live)
    # Between the two, an id line alone moved the client's position to the head.
    assert f"id: {ids[-1]}\n\n".encode() in sub.raw


async def test_a_malformed_id_resets_and_never_errors_the_stream(
    aiohttp_client: MakeClient,
) -> None:
    client, base = await node(aiohttp_client)
    await publish(client, "a", "before")
    for bad in ("nonsense", "1-2-3", "99999999999999-99999"):
        async with subscribe(client.session, base, ["a"], headers={"Last-Event-ID": bad}) as sub:
            live = await publish(client, "a", "after")
            reset, after = await sub.wait_for(2)
            assert reset.event == "reset"
            assert orjson.loads(reset.data)["channels"] == ["a"]
            assert orjson.loads(reset.data)["reason"] in ("malformed", "unknown")
            assert after == Event("after", id=live)


async def test_an_id_with_nothing_new_replays_nothing(aiohttp_client: MakeClient) -> None:
    client, base = await node(aiohttp_client)
    last = await publish(client, "a", "seen")
    async with subscribe(
        client.session, base, ["a", "quiet"], headers={"Last-Event-ID": last}
    ) as sub:
        live = await publish(client, "a", "new")
        assert await sub.wait_for(1) == [Event("new", id=live)]
