"""The demo on one node (embedded broker): fenced to its prefix, authorized like a
publish, rate-limited per address, bounded, and gone when off."""

from __future__ import annotations

from typing import Any

import pytest

from broadcaster.demo.answer import simulated_answer, tokens
from broadcaster.demo.routes import DEMO
from tests.support.client import subscribe
from tests.support.nodes import Client, StartClient, base_url
from tests.support.tokens import SECRET, token
from tests.support.wait import wait_until

QUESTION = {"channel": "demo:abc", "prompt": "why?"}
PUBLISHER = {"Authorization": "Bearer s3cret"}


async def node(start_client: StartClient, **settings: Any) -> Client:
    return await start_client(**{"demo_token_delay": 0, **settings})


def authorization(headers: dict[str, Any]) -> dict[str, str]:
    """Headers as given, with {"jwt": claims} turned into a fresh signed bearer token."""
    if "jwt" in headers:
        return {"Authorization": f"Bearer {token(**headers['jwt'])}"}
    return headers


async def refused(client: Client, status: int, reason: str, **request: Any) -> None:
    """The ask gets `status` with a one-line `reason`, and starts nothing."""
    answer = await client.post("/demo/ask", **{"json": QUESTION, **request})
    text = await answer.text()
    assert answer.status == status, text
    assert reason in text and text.count("\n") == 1, text
    assert not client.app[DEMO].answers


async def test_an_answer_streams_on_a_demo_channel(start_client: StartClient) -> None:
    client = await node(start_client, node_id="n1")
    async with subscribe(client.session, base_url(client), ["demo:abc"]) as sub:
        answer = await client.post("/demo/ask", json=QUESTION)
        assert answer.status == 202
        assert await answer.json() == {"channel": "demo:abc", "producer": "n1"}
        words = tokens(simulated_answer("why?"))
        await wait_until(lambda: any(e.event == "done" for e in sub.events), 10, "done")
        events = sub.events
        said = events[1:-1]  # the words, coalesced: those of each 50 ms in one event
        assert [e.event for e in events] == ["thinking"] + ["token"] * len(said) + ["done"]
        assert "".join(e.data for e in said) == simulated_answer("why?")
        assert events[-1].data == f'{{"chunks":{len(words)},"events":{len(said)}}}'


async def test_other_channels_are_refused_and_get_nothing(start_client: StartClient) -> None:
    client = await node(start_client, publish_token="s3cret")
    async with subscribe(client.session, base_url(client), ["payments"]) as sub:
        for channel in ("payments", "demo", "Demo:x", "xdemo:x"):
            body = {"channel": channel, "prompt": "inject"}
            await refused(
                client, 403, "only on channels starting with 'demo:'", json=body, headers=PUBLISHER
            )
        marker = await client.post(
            "/publish", json={"channel": "payments", "data": "marker"}, headers=PUBLISHER
        )
        assert marker.status == 200
        assert [e.data for e in await sub.wait_for(1)] == ["marker"]


async def test_the_prefix_is_a_setting_and_the_page_uses_it(start_client: StartClient) -> None:
    client = await node(start_client, demo_prefix="play:")
    page = await (await client.get("/")).text()
    assert '"play:" + crypto.randomUUID()' in page
    await refused(client, 403, "starting with 'play:'")
    answer = await client.post("/demo/ask", json={"channel": "play:x", "prompt": "hi"})
    assert answer.status == 202


@pytest.mark.parametrize(
    ("settings", "headers", "status", "reason"),
    [
        ({"publish_token": "s3cret"}, {}, 401, "missing or wrong bearer token"),
        ({"publish_token": "s3cret"}, {"Authorization": "Bearer nope"}, 401, "wrong bearer"),
        ({"jwt_secret": SECRET}, {}, 401, "missing token"),
        ({"jwt_secret": SECRET}, {"Authorization": "Bearer garbage"}, 401, "invalid token"),
        (
            {"jwt_secret": SECRET},
            {"jwt": {"publish": ["other:*"], "subscribe": ["*"]}},
            403,
            "token does not allow publish on any channel starting with 'demo:'",  # (no body read)
        ),
        (
            {"jwt_secret": SECRET},
            {"jwt": {"publish": ["demo:x*"]}},
            403,
            "token does not allow publish on channel 'demo:abc'",
        ),
        (
            {"jwt_secret": SECRET, "publish_token": "s3cret"},
            {"jwt": {"publish": []}},
            403,
            "does not allow publish",
        ),
    ],
)
async def test_with_authentication_asking_needs_the_publish_right(
    start_client: StartClient,
    settings: dict[str, str],
    headers: dict[str, Any],
    status: int,
    reason: str,
) -> None:
    client = await node(start_client, **settings)
    await refused(client, status, reason, headers=authorization(headers))


@pytest.mark.parametrize(
    ("settings", "headers"),
    [
        ({"publish_token": "s3cret"}, PUBLISHER),
        ({"jwt_secret": SECRET}, {"jwt": {"publish": ["demo:*"]}}),
        ({"jwt_secret": SECRET, "publish_token": "s3cret"}, PUBLISHER),
    ],
)
async def test_with_authentication_the_publish_right_may_ask(
    start_client: StartClient, settings: dict[str, str], headers: dict[str, Any]
) -> None:
    client = await node(start_client, **settings)
    answer = await client.post("/demo/ask", json=QUESTION, headers=authorization(headers))
    assert answer.status == 202, await answer.text()


async def test_a_jwt_cookie_may_ask_as_the_page_does(start_client: StartClient) -> None:
    client = await node(start_client, jwt_secret=SECRET)
    cookies = {"broadcaster_token": token(publish=["demo:*"])}
    page = base_url(client)  # a browser sends the page's origin
    answer = await client.post(
        "/demo/ask", json=QUESTION, cookies=cookies, headers={"Origin": page}
    )
    assert answer.status == 202, await answer.text()


async def test_off_refuses_and_serves_no_demo_page(start_client: StartClient) -> None:
    client = await node(start_client, demo="off", publish_token="s3cret")
    async with subscribe(client.session, base_url(client), ["demo:abc"]) as sub:
        for headers in ({}, PUBLISHER):
            answer = await client.post("/demo/ask", json=QUESTION, headers=headers)
            assert answer.status == 403
            assert await answer.text() == "the demo is off on this node (BROADCASTER_DEMO=off)\n"
        for path in ("/", "/dashboard", "/cluster"):
            assert (await client.get(path)).status == 404, path
        assert DEMO not in client.app
        marker = await client.post(
            "/publish", json={"channel": "demo:abc", "data": "marker"}, headers=PUBLISHER
        )
        assert marker.status == 200
        assert [e.data for e in await sub.wait_for(1)] == ["marker"]


async def test_asks_are_limited_per_client_address(start_client: StartClient) -> None:
    client = await node(start_client, demo_asks_per_minute=2, trusted_proxies=("127.0.0.1", "::1"))
    for _ in range(2):
        assert (await client.post("/demo/ask", json=QUESTION)).status == 202
    answer = await client.post("/demo/ask", json=QUESTION)
    assert answer.status == 429
    assert await answer.text() == "too many questions from this address\n"
    assert 1 <= int(answer.headers["Retry-After"]) <= 60
    elsewhere = {"X-Forwarded-For": "203.0.113.7"}
    assert (await client.post("/demo/ask", json=QUESTION, headers=elsewhere)).status == 202


async def test_answers_under_way_are_bounded(start_client: StartClient) -> None:
    client = await node(start_client, demo_queue_max=2, demo_token_delay=5)
    for _ in range(2):
        assert (await client.post("/demo/ask", json=QUESTION)).status == 202
    answer = await client.post("/demo/ask", json=QUESTION)
    assert answer.status == 503 and "answering 2 questions already" in await answer.text()
    assert "Retry-After" in answer.headers
    assert len(client.app[DEMO].answers) == 2


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{", 400, "not valid JSON"),
        (b'{"channel": "demo:x"}', 400, "prompt: Field required"),
        (b'{"channel": "demo x", "prompt": "p"}', 400, "channel: channel 'demo x' may contain"),
        (b'{"channel": "demo:x", "prompt": "' + b"p" * 501 + b'"}', 400, "prompt: String"),
        (b'{"channel": "demo:x", "prompt": "p", "x": 1}', 400, "x: Extra inputs"),
        (b'{"channel": "demo:x", "prompt": "' + b"p" * 5000 + b'"}', 413, "at most 4096 bytes"),
    ],
)
async def test_bad_questions_get_a_one_line_reason(
    start_client: StartClient, body: bytes, status: int, reason: str
) -> None:
    client = await node(start_client)
    await refused(client, status, reason, data=body, json=None)
