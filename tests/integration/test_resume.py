"""Last-Event-ID resume over HTTP, on each broker: replay, then live; resets that never
error the stream. (The broker-level contract: tests/contract/test_broker.py.)"""

from __future__ import annotations

import aiohttp
import orjson

from tests.support.client import subscribe
from tests.support.nodes import StartApp
from tests.support.publish import publish
from tests.support.sse import Event


async def test_resume_replays_every_channel_in_order_then_goes_live(
    start_broker_app: StartApp, session: aiohttp.ClientSession
) -> None:
    base = await start_broker_app()
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
    start_broker_app: StartApp, session: aiohttp.ClientSession
) -> None:
    base = await start_broker_app()
    first = await publish(session, base, "a", "one")
    second = await publish(session, base, "a", "two")
    async with subscribe(session, f"{base}", ["a"], query={"lastEventId": first}) as sub:
        assert await sub.wait_for(1) == [Event("two", id=second)]


async def test_trimmed_history_starts_with_a_reset_then_live(
    start_broker_app: StartApp, session: aiohttp.ClientSession
) -> None:
    base = await start_broker_app(history_maxlen=2)
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
    start_broker_app: StartApp, session: aiohttp.ClientSession
) -> None:
    base = await start_broker_app()
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
    start_broker_app: StartApp, session: aiohttp.ClientSession
) -> None:
    base = await start_broker_app()
    last = await publish(session, base, "a", "seen")
    async with subscribe(session, base, ["a", "quiet"], headers={"Last-Event-ID": last}) as sub:
        live = await publish(session, base, "a", "new")
        assert await sub.wait_for(1) == [Event("new", id=live)]
