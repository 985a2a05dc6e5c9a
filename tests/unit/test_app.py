"""The HTTP surface of one node on the embedded broker (aiohttp's test client)."""

from __future__ import annotations

from typing import Any

import pytest

from broadcaster.core.ids import EventId
from broadcaster.node.state import STATE
from tests.support.client import subscribe
from tests.support.nodes import Client, StartClient, base_url
from tests.support.sse import Event
from tests.support.wait import wait_until

AUTH = {"Authorization": "Bearer s3cret"}


@pytest.fixture
async def client(start_client: StartClient) -> Client:
    return await start_client(publish_token="s3cret", heartbeat_interval=0.2, retry_ms=1500)


async def publish(client: Client, **body: Any) -> Any:
    answer = await client.post("/publish", json=body, headers=AUTH)
    assert answer.status == 200, await answer.text()
    return await answer.json()


async def test_stream_headers_and_first_retry_line(client: Client) -> None:
    async with subscribe(client.session, base_url(client), ["news"]) as sub:
        headers = sub.response.headers
        assert headers["Content-Type"] == "text/event-stream"
        assert headers["Cache-Control"] == "no-cache"
        assert headers["X-Accel-Buffering"] == "no"
        assert "Content-Length" not in headers
        assert "Content-Encoding" not in headers
        await wait_until(lambda: bool(sub.raw), 5, "the first bytes")
        assert sub.raw == b"retry: 1500\n\n"


async def test_published_messages_reach_every_subscriber(client: Client) -> None:
    async with (
        subscribe(client.session, base_url(client), ["news"]) as one,
        subscribe(client.session, base_url(client), ["news", "sport"]) as two,
    ):
        first = await publish(client, channel="news", data="a\r\nb", event="update")
        await publish(client, channel="sport", data={"score": [1, 0]})
        await publish(client, channel="other", data="nobody")
        assert [(e.data, e.event) for e in await two.wait_for(2)] == [
            ("a\nb", "update"),
            ('{"score":[1,0]}', "message"),
        ]
        assert await one.wait_for(1) == [Event("a\nb", "update", first["id"])]


async def test_heartbeats_flow_on_a_silent_stream(client: Client) -> None:
    async with subscribe(client.session, base_url(client), ["quiet"]) as sub:
        await wait_until(lambda: sub.parser.comments >= 2, 5, "two heartbeats")
        assert sub.raw.startswith(b"retry: 1500\n\n:\n\n:\n\n")
        assert sub.events == []


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "missing channel"),
        ("?channel=", "channel name is empty"),
        ("?channel=ok&channel=a%20b", "channel 'a b' may contain only"),
        ("?channel=bad%20name", "may contain only"),
        ("?channel=" + "x" * 201, "longer than 200"),
        ("?" + "&".join(f"channel=c{i}" for i in range(17)), "too many channels: at most 16"),
        ("?channel=a&tail=x", "tail must be a whole number from 0 to 10000"),
        ("?channel=a&tail=-1", "tail must be a whole number"),
        ("?channel=a&tail=10001", "tail must be a whole number"),
        ("?channel=a&tail=%C2%B2", "tail must be a whole number"),
    ],
)
async def test_bad_subscriptions_get_400_and_a_reason(
    client: Client, query: str, reason: str
) -> None:
    answer = await client.get("/events" + query)
    assert answer.status == 400
    text = await answer.text()
    assert reason in text and text.count("\n") == 1


async def test_publish_needs_the_bearer_token(client: Client) -> None:
    body = {"channel": "news", "data": "x"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        answer = await client.post("/publish", json=body, headers=headers)
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"


async def test_publish_is_off_without_a_token(start_client: StartClient) -> None:
    client = await start_client()
    answer = await client.post("/publish", json={"channel": "c", "data": "x"}, headers=AUTH)
    assert answer.status == 403
    assert "BROADCASTER_PUBLISH_TOKEN" in await answer.text()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "an array body holds 1 to 1000 messages"),
        (b"3", 'body must be a JSON object {"channel": ..., "data": ...} or an array'),
        (b'[{"channel": "c", "data": "x"}, 7]', "body[1]: must be a JSON object"),
        (b'[{"channel": "c", "data": "x"}, {"data": "y"}]', "body[1].channel: Field required"),
        (b'{"data": "x"}', "channel: Field required"),
        (
            b'{"channel": "c", "data": ' + b"[" * 300 + b"]" * 300 + b"}",
            "data: data is nested too deeply (at most 255 levels)",
        ),
        (b'{"channel": "a b", "data": "x"}', "channel: channel 'a b' may contain only"),
        (b'{"channel": "c", "data": "x", "event": "a\\nb"}', "event: event must not contain"),
        (b'{"channel": "c", "data": "x", "extra": 1}', "extra: Extra inputs"),
    ],
)
async def test_bad_publish_bodies_get_400_and_a_reason(
    client: Client, body: bytes, reason: str
) -> None:
    answer = await client.post("/publish", data=body, headers=AUTH)
    assert answer.status == 400
    text = await answer.text()
    assert reason in text, text
    assert text.count("\n") == 1


async def test_publish_answers_json_with_the_id(client: Client) -> None:
    first = await publish(client, channel="c", data="x")
    second = await publish(client, channel="d", data="y")
    assert first["channel"] == "c" and second["channel"] == "d"
    assert EventId.parse(first["id"]) < EventId.parse(second["id"])  # type: ignore[operator]


async def test_health_and_readiness(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    client.app[STATE].draining = True
    answer = await client.get("/readyz")
    assert answer.status == 503 and await answer.text() == "draining\n"
    assert (await client.get("/events?channel=x")).status == 503
    assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize(
    ("count", "size", "status", "reason"),
    [
        (1001, 1, 400, "an array body holds 1 to 1000 messages"),
        (3, 400_000, 413, "body is over BROADCASTER_MAX_MESSAGE_BYTES"),
    ],
)
async def test_a_batch_past_a_limit_is_refused_whole(
    client: Client, count: int, size: int, status: int, reason: str
) -> None:
    batch = [{"channel": "whole", "data": "x" * size} for _ in range(count)]
    answer = await client.post("/publish", json=batch, headers=AUTH)
    assert answer.status == status and reason in await answer.text()
    after = await publish(client, channel="whole", data="after")
    assert EventId.parse(after["id"]).seq == 1, "nothing of the refused batch was published"  # type: ignore[union-attr]
