"""Last-Event-ID resume over HTTP, on each broker: replay, then live; resets that never
error the stream. (The broker-level contract: tests/contract/test_broker.py.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.client import subscribe
from tests.support.sse import Event

StartApp = Callable[..., Awaitable[str]]
Node = tuple[aiohttp.ClientSession, str]
AUTH = {"Authorization": "Bearer t"}


@pytest.fixture
def start(broker_settings: dict[str, Any], start_app: StartApp) -> Callable[..., Awaitable[str]]:
    """Start a node on the broker of this run, with a publish token."""

    async def node(**settings: Any) -> str:
        return await start_app(publish_token="t", **broker_settings, **settings)

    return node


async def publish(session: aiohttp.ClientSession, base: str, channel: str, data: str) -> str:
    body = {"channel": channel, "data": data}
    async with session.post(f"{base}/publish", json=body, headers=AUTH) as answer:
        assert answer.status == 200
        return str((await answer.json())["id"])


async def test_resume_replays_every_channel_in_order_then_goes_live(
    start: Callable[..., Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    base = await start()
    ids = [
        await publish(session, base, channel, data)
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
    async with subscribe(session, base, ["a", "b"], headers=headers) as sub:
        live = await publish(session, base, "b", "b3")
        assert await sub.wait_for(4) == [
            Event("a2", id=ids[2]),
            Event("b2", id=ids[4]),
            Event("a3", id=ids[5]),
            Event("b3", id=live),
        ]


async def test_a_reloaded_page_resumes_with_the_query_parameter(
    start: Callable[..., Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    base = await start()
    first = await publish(session, base, "a", "one")
    second = await publish(session, base, "a", "two")
    async with subscribe(session, f"{base}", ["a"], query={"lastEventId": first}) as sub:
        assert await sub.wait_for(1) == [Event("two", id=second)]


async def test_trimmed_history_starts_with_a_reset_then_live(
    start: Callable[..., Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    base = await start(history_maxlen=2)
    ids = [await publish(session, base, "a", f"m{n}") for n in range(5)]
    async with subscribe(session, base, ["a", "b"], headers={"Last-Event-ID": ids[0]}) as sub:
        live = await publish(session, base, "a", "live")
        events = await sub.wait_for(2)
    reset, after = events
    assert reset.event == "reset"
    assert orjson.loads(reset.data) == {"channels": ["a"], "reason": "trimmed"}
    assert after == Event("live", id=live)
    # Between the two, an id line alone moved the client's position to the head.
    assert f"id: {ids[-1]}\n\n".encode() in sub.raw
    # Retained now: the last two and live. From the first retained on, nothing is missing.
    async with subscribe(session, base, ["a"], headers={"Last-Event-ID": ids[3]}) as again:
        assert [event.id for event in await again.wait_for(2)] == [ids[4], live]


async def test_a_malformed_id_resets_and_never_errors_the_stream(
    start: Callable[..., Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    base = await start()
    await publish(session, base, "a", "before")
    for bad in ("nonsense", "1-2-3", "99999999999999-99999"):
        async with subscribe(session, base, ["a"], headers={"Last-Event-ID": bad}) as sub:
            live = await publish(session, base, "a", "after")
            reset, after = await sub.wait_for(2)
            assert reset.event == "reset"
            assert orjson.loads(reset.data)["channels"] == ["a"]
            assert orjson.loads(reset.data)["reason"] in ("malformed", "unknown")
            assert after == Event("after", id=live)


async def test_an_id_with_nothing_new_replays_nothing(
    start: Callable[..., Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    base = await start()
    last = await publish(session, base, "a", "seen")
    async with subscribe(session, base, ["a", "quiet"], headers={"Last-Event-ID": last}) as sub:
        live = await publish(session, base, "a", "new")
        assert await sub.wait_for(1) == [Event("new", id=live)]
