"""Caps, authentication and CORS on one node (embedded broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broadcaster import create_app
from broadcaster.brokers.memory import MemoryBroker
from broadcaster.brokers.protocol import KEY_LIMIT_REASON, KeyLimit
from broadcaster.cli import load_settings
from broadcaster.core.publication import Publication
from broadcaster.node.state import HUB, METRICS
from broadcaster.settings import Settings
from tests.support.client import subscribe
from tests.support.nodes import Client, MakeClient, StartClient, base_url
from tests.support.sse import Event
from tests.support.tokens import SECRET, token
from tests.support.wait import wait_until

OTHER = "some-other-secret-of-32-bytes!!!!"


async def node(start_client: StartClient, **settings: Any) -> tuple[Client, str]:
    client = await start_client(**settings)
    return client, base_url(client)


async def test_node_cap_answers_503_with_retry_after(start_client: StartClient) -> None:
    client, base = await node(start_client, max_connections=2)
    async with subscribe(client.session, base, ["a"]), subscribe(client.session, base, ["b"]):
        refused = await client.get("/events?channel=c")
        assert refused.status == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert "connection cap" in await refused.text()
    # Slots come back when clients leave.
    async with subscribe(client.session, base, ["c"]):
        pass


async def test_per_address_cap_answers_429(start_client: StartClient) -> None:
    client, base = await node(start_client, max_connections_per_ip=1)
    async with subscribe(client.session, base, ["a"]):
        refused = await client.get("/events?channel=b")
        assert refused.status == 429 and "Retry-After" in refused.headers


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(start_client: StartClient) -> None:
    trusting, base = await node(
        start_client, max_connections_per_ip=1, trusted_proxies=("127.0.0.1",)
    )
    async with AsyncExitStack() as stack:
        for address in ("203.0.113.1", "203.0.113.2"):
            headers = {"X-Forwarded-For": f"{address}, 127.0.0.1"}
            await stack.enter_async_context(subscribe(trusting.session, base, ["a"], headers))
        again = await trusting.get("/events?channel=a", headers={"X-Forwarded-For": "203.0.113.1"})
        assert again.status == 429
    wary, base = await node(start_client, max_connections_per_ip=1)
    async with subscribe(wary.session, base, ["a"], {"X-Forwarded-For": "203.0.113.1"}):
        spoofed = await wary.get("/events?channel=a", headers={"X-Forwarded-For": "203.0.113.9"})
        assert spoofed.status == 429  # the header is ignored: both are 127.0.0.1


async def test_retry_mode_answers_200_with_a_jittered_retry_and_closes(
    start_client: StartClient,
) -> None:
    client, base = await node(start_client, max_connections=1, overload_response="retry")
    async with subscribe(client.session, base, ["a"]):
        answer = await client.get("/events?channel=b")
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "text/event-stream"
        body = (await answer.read()).decode()
        retry = int(body.split("\n")[0].removeprefix("retry: "))
        assert 3000 <= retry <= 9000 and ": cap" in body


class UnreachableBroker(MemoryBroker):
    """A broker that has lost its server (as a Redis broker between reconnects)."""

    @property
    def connected(self) -> bool:
        return False


@pytest.mark.parametrize("mode", ["error", "retry"])
async def test_a_node_without_its_broker_refuses_subscribers_politely(
    aiohttp_client: MakeClient, mode: str
) -> None:
    app = create_app(Settings(overload_response=mode), UnreachableBroker())
    client = await aiohttp_client(app)
    answer = await client.get("/events?channel=a")
    if mode == "error":
        assert answer.status == 503
        assert answer.headers["Retry-After"].isdigit()
        assert await answer.text() == (
            "broker unavailable: this node cannot reach Redis right now\n"
        )
    else:
        assert answer.status == 200
        body = (await answer.read()).decode()
        assert body.startswith("retry: ") and body.endswith(": unavailable\n\n")
    assert app[METRICS].counts.rejected["unavailable"] == 1
    assert app[HUB].stream_count == 0


async def test_subscribing_needs_a_token_that_covers_every_channel(
    start_client: StartClient,
) -> None:
    client, base = await node(start_client, jwt_secret=SECRET)
    good = token(subscribe=["user:42:*", "news"])
    cases = [
        ({}, "?channel=news", 401, "missing token"),
        ({"Authorization": "Bearer nonsense"}, "?channel=news", 401, "invalid token"),
        (
            {"Authorization": f"Bearer {token(expires=-10, subscribe=['*'])}"},
            "?channel=news",
            401,
            "token expired",
        ),
        (
            {"Authorization": f"Bearer {token(OTHER, subscribe=['*'])}"},
            "?channel=news",
            401,
            "invalid token",
        ),
        ({"Authorization": f"Bearer {good}"}, "?channel=news&channel=admin", 403, "'admin'"),
    ]
    for headers, query, status, reason in cases:
        answer = await client.get("/events" + query, headers=headers)
        assert (answer.status, reason in await answer.text()) == (status, True), reason
    for where in ({"headers": {"Authorization": f"Bearer {good}"}}, {"query": {"token": good}}):
        async with subscribe(client.session, base, ["news", "user:42:inbox"], **where):
            pass
    client.session.cookie_jar.update_cookies({"broadcaster_token": good})
    async with subscribe(client.session, base, ["user:42:x"]):
        pass


async def test_presence_needs_subscribe_or_presence_on_every_channel(
    start_client: StartClient,
) -> None:
    client, base = await node(start_client, jwt_secret=SECRET, max_channels_per_connection=2)
    cases = [
        ("", "?channel=news", 401, "missing token"),
        (token(expires=-10, presence=["*"]), "?channel=news", 401, "token expired"),
        (token(presence="news"), "?channel=news&channel=admin", 403, "presence on channel 'admin'"),
        (token(publish=["*"]), "?channel=news", 403, "presence on channel 'news'"),
        (token(presence=5), "?channel=news", 401, "claim 'presence' must be a list"),
        (token(presence=["*"]), "", 400, "missing channel"),
        (token(presence=["*"]), "?channel=a&channel=b&channel=c", 400, "too many channels"),
        (token(presence=["*"]), "?channel=a%20b", 400, "channel"),
        (token(subscribe=["room:*"]), "?channel=room:1", 200, '"room:1": 0'),
        (token(subscribe=["room:*"], presence=["lobby"]), "?channel=room:1&channel=lobby", 200, ""),
    ]
    for signed, query, status, reason in cases:
        headers = {"Authorization": f"Bearer {signed}"} if signed else {}
        answer = await client.get("/presence" + query, headers=headers)
        text = await answer.text()
        assert (answer.status, reason in text) == (status, True), (reason, text)
        if status != 200:
            assert text.count("\n") == 1  # one line
    async with subscribe(
        client.session, base, ["room:1"], {"Authorization": f"Bearer {token(subscribe=['*'])}"}
    ):
        answer = await client.get(
            "/presence?channel=room:1",
            headers={"Authorization": f"Bearer {token(presence=['room:*'])}"},
        )
        assert await answer.json() == {"channels": {"room:1": 1}, "scope": "node"}


async def test_publishing_needs_a_publish_claim(start_client: StartClient) -> None:
    client, base = await node(start_client, jwt_secret=SECRET)
    reader = {"Authorization": f"Bearer {token(subscribe=['*'])}"}
    writer = {"Authorization": f"Bearer {token(publish=['room:*'])}"}
    body = {"channel": "room:1", "data": "hi"}
    assert (await client.post("/publish", json=body)).status == 401
    assert (await client.post("/publish", json=body, headers=reader)).status == 403
    async with subscribe(client.session, base, ["room:1"], reader) as sub:
        answer = await client.post("/publish", json=body, headers=writer)
        assert answer.status == 200
        assert await sub.wait_for(1) == [Event("hi", id=(await answer.json())["id"])]
    elsewhere = {"channel": "lobby", "data": "x"}
    assert (await client.post("/publish", json=elsewhere, headers=writer)).status == 403


async def test_public_keys_verify_rs_and_es_tokens(start_client: StartClient) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    client, base = await node(start_client, jwt_public_key=public)
    signed = token(private, "ES256", subscribe=["*"])
    async with subscribe(client.session, base, ["a"], {"Authorization": f"Bearer {signed}"}):
        pass
    forged = token(SECRET, "HS256", subscribe=["*"])
    answer = await client.get("/events?channel=a", headers={"Authorization": f"Bearer {forged}"})
    assert answer.status == 401


async def test_a_token_labelled_for_another_key_type_is_a_401(start_client: StartClient) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        rsa_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    client, _ = await node(start_client, jwt_public_key=public)
    es256 = token(ec.generate_private_key(ec.SECP256R1()), "ES256", subscribe=["*"])
    answer = await client.get("/events?channel=a", headers={"Authorization": f"Bearer {es256}"})
    assert answer.status == 401
    assert (await answer.text()).startswith("invalid token: ")


@pytest.mark.parametrize("origin", ["https://app.example", "http://localhost:3000"])
async def test_cors_echoes_allowed_origins_with_credentials(
    start_client: StartClient, origin: str
) -> None:
    client, base = await node(
        start_client, cors_origins=("https://app.example", "http://localhost:3000")
    )
    async with subscribe(client.session, base, ["a"], {"Origin": origin}) as sub:
        assert sub.response.headers["Access-Control-Allow-Origin"] == origin
        assert sub.response.headers["Access-Control-Allow-Credentials"] == "true"
    preflight = await client.options(
        "/publish", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]


async def test_cors_never_answers_other_origins_or_a_wildcard(start_client: StartClient) -> None:
    client, base = await node(start_client, cors_origins=("https://app.example",))
    async with subscribe(client.session, base, ["a"], {"Origin": "https://evil.example"}) as sub:
        assert "Access-Control-Allow-Origin" not in sub.response.headers
    preflight = await client.options("/events", headers={"Origin": "https://evil.example"})
    assert preflight.status == 403
    with pytest.raises(SystemExit, match="BROADCASTER_CORS_ORIGINS"):
        load_settings(cors_origins="*")


async def test_a_burst_at_the_cap_admits_exactly_the_cap(start_client: StartClient) -> None:
    client, _ = await node(start_client, max_connections=25)
    attempts = [client.get("/events?channel=burst") for _ in range(60)]
    answers = await asyncio.gather(*attempts)
    try:
        assert sorted(a.status for a in answers) == [200] * 25 + [503] * 35
    finally:
        for answer in answers:
            answer.close()


def sized_body(size: int) -> bytes:
    """A publish body of exactly `size` bytes."""
    frame = b'{"channel": "a", "data": ""}'
    return frame[:-2] + b"x" * (size - len(frame)) + frame[-2:]


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_publish_body_over_max_message_bytes_gets_413(
    start_client: StartClient, chunked: bool
) -> None:
    client, _ = await node(start_client, publish_token="t", max_message_bytes=2048)
    auth = {"Authorization": "Bearer t"}

    async def post(body: bytes) -> aiohttp.ClientResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield body

        return await client.post("/publish", data=chunks() if chunked else body, headers=auth)

    assert (await post(sized_body(2048))).status == 200
    answer = await post(sized_body(2049))
    assert answer.status == 413
    assert await answer.text() == "body is over BROADCASTER_MAX_MESSAGE_BYTES (2048 bytes)\n"


async def test_injected_fields_arrive_as_literal_data(start_client: StartClient) -> None:
    client, base = await node(start_client, publish_token="t")
    async with subscribe(client.session, base, ["a"]) as sub:
        attack = "x\n\nevent: admin\ndata: y\nid: 999-1\nretry: 1"
        body = {"channel": "a", "data": attack}
        answer = await client.post("/publish", json=body, headers={"Authorization": "Bearer t"})
        assert answer.status == 200
        assert await sub.wait_for(1) == [Event(attack, id=(await answer.json())["id"])]
        assert sub.parser.retry == 3000


async def test_a_pathological_pattern_against_a_long_channel_is_refused_at_once(
    start_client: StartClient,
) -> None:
    # A backtracking matcher spent 13 s of a blocked loop on this (tests/unit/test_patterns).
    client, _ = await node(start_client, jwt_secret=SECRET)
    signed = token(subscribe=["*.*.*.*.*.public"])
    answer = await client.get(
        "/events", params={"channel": "." * 200}, headers={"Authorization": f"Bearer {signed}"}
    )
    assert answer.status == 403


@pytest.mark.parametrize("path", ["/publish", "/demo/ask"])
async def test_cookie_authenticated_changes_must_come_from_an_allowed_origin_as_json(
    start_client: StartClient, path: str
) -> None:
    # CSRF: a page on evil.example can make the browser POST with the victim's cookie,
    # as text/plain (no preflight). Only the node's own origin and CORS_ORIGINS may.
    client, base = await node(
        start_client, jwt_secret=SECRET, cors_origins=("https://app.example",)
    )
    client.session.cookie_jar.update_cookies({"broadcaster_token": token(publish=["demo:*"])})
    field = "prompt" if path == "/demo/ask" else "data"
    body = orjson.dumps({"channel": "demo:x", field: "x"})
    as_json = {"Content-Type": "application/json"}
    own = base  # scheme://host:port: the node's own origin, as a browser sends it

    async def post(headers: dict[str, str]) -> tuple[int, str]:
        answer = await client.post(path, data=body, headers=headers)
        return answer.status, await answer.text()

    refused = [
        ({"Origin": "https://evil.example", "Content-Type": "text/plain"}, "'https://evil"),
        ({"Origin": "https://evil.example", **as_json}, "may not publish with the cookie"),
        (as_json, "must carry an Origin header"),
        ({"Origin": "https://app.example", "Content-Type": "text/plain"}, "application/json"),
    ]
    for headers, reason in refused:
        status, text = await post(headers)
        assert status == 403 and reason in text, (headers, status, text)
    ok = 202 if path == "/demo/ask" else 200
    for origin in ("https://app.example", own):
        status, text = await post({"Origin": origin, **as_json})
        assert status == ok, text
    # A client that sends its token in a header is not a browser riding a cookie.
    header = {"Authorization": f"Bearer {token(publish=['demo:*'])}", "Content-Type": "text/x"}
    status, text = await post(header)
    assert status == ok, text


@pytest.mark.parametrize("expiry", ["end", "keep"])
async def test_a_stream_ends_when_its_token_expires(
    aiohttp_client: MakeClient, expiry: str
) -> None:
    # A token that expired, or was meant to be revoked by expiring, must not go on
    # receiving: the stream ends with a jittered retry:, and the client comes back with a
    # fresh token (or is refused).
    app = create_app(
        Settings(jwt_secret=SECRET, token_expiry=expiry, heartbeat_interval=0.2, retry_ms=100)
    )
    client = await aiohttp_client(app)
    base = base_url(client)
    short = {"Authorization": f"Bearer {token(expires=2, subscribe=['a'])}"}
    async with subscribe(client.session, base, ["a"], short) as sub:
        if expiry == "end":
            await asyncio.wait_for(sub.ended.wait(), 10)
            assert sub.raw.endswith(b"\n\n") and sub.raw.count(b"retry: ") == 2
            assert app[HUB].stream_count == 0
        else:
            # Heartbeats every 0.2 s: 20 of them take the stream past its token's exp.
            await wait_until(lambda: sub.parser.comments >= 20, 15, "heartbeats")
            assert app[HUB].stream_count == 1  # the token's exp is not the stream's end


class FullOfKeys(MemoryBroker):
    """A broker whose channel remembers as many idempotency keys as it may."""

    async def publish(self, batch: Sequence[Publication]) -> list[str]:
        raise KeyLimit(KEY_LIMIT_REASON)


async def test_a_publish_past_the_idempotency_key_bound_is_a_429(
    aiohttp_client: MakeClient,
) -> None:
    client = await aiohttp_client(create_app(Settings(publish_token="t"), FullOfKeys()))
    body = {"channel": "a", "data": "x", "idempotency_key": "k"}
    answer = await client.post("/publish", json=body, headers={"Authorization": "Bearer t"})
    assert answer.status == 429
    assert await answer.text() == KEY_LIMIT_REASON + "\n"
