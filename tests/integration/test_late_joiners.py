"""Late joiners on both brokers: `lastEventId=earliest` replays everything retained and
`tail=N` the newest N of all the channels together, in id order, then live, with no gap
and no duplicate."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import orjson
import pytest

from tests.support.client import Subscriber, subscribe
from tests.support.nodes import StartApp
from tests.support.publish import publish

Node = tuple[aiohttp.ClientSession, str]


@pytest.fixture
async def node(start_broker_app: StartApp, session: aiohttp.ClientSession) -> Node:
    """A node on each broker in turn."""
    return session, await start_broker_app(history_maxlen=5)


def ids(sub: Subscriber) -> list[str]:
    return [event.id for event in sub.events]


async def test_earliest_replays_all_retained_then_goes_live(node: Node) -> None:
    published = [await publish(*node, "a" if n % 3 else "b", f"m{n}") for n in range(8)]
    session, base = node
    by_query = subscribe(session, base, ["a", "b"], query={"lastEventId": "earliest"})
    by_header = subscribe(session, base, ["a", "b"], headers={"Last-Event-ID": "earliest"})
    for joining in (by_query, by_header):
        async with joining as sub:
            await sub.wait_for(len(published))
            live = await publish(*node, "b", "live")
            await sub.wait_for(len(published) + 1)
            assert ids(sub) == [*published, live]
            assert all(event.event == "message" for event in sub.events), "no reset"
            published.append(live)


async def test_earliest_after_a_trim_is_what_is_retained_without_reset(node: Node) -> None:
    published = [await publish(*node, "trimmed", f"m{n}") for n in range(9)]  # maxlen 5
    session, base = node
    async with subscribe(session, base, ["trimmed"], query={"lastEventId": "earliest"}) as sub:
        await sub.wait_for(5)
        assert ids(sub) == published[-5:]
        assert {event.event for event in sub.events} == {"message"}


async def test_tail_replays_the_newest_of_all_channels_together(node: Node) -> None:
    channels = ["c1", "c2", "c3"]
    published = [await publish(*node, channels[n % 3], f"m{n}") for n in range(10)]
    session, base = node
    async with subscribe(session, base, channels, query={"tail": "4"}) as sub:
        await sub.wait_for(4)
        live = await publish(*node, "c2", "live")
        await sub.wait_for(5)
        assert ids(sub) == [*published[-4:], live]
    async with subscribe(session, base, channels, query={"tail": "0"}) as sub:
        live = await publish(*node, "c3", "only live")
        await sub.wait_for(1)
        assert ids(sub) == [live], "nothing replayed before the live message"
    async with subscribe(session, base, ["c1"], query={"tail": "50"}) as sub:
        await sub.wait_for(4)
        assert ids(sub) == published[0:10:3]  # fewer retained than asked: all of them


async def test_a_reconnect_resumes_from_its_id_not_from_the_start(node: Node) -> None:
    published = [await publish(*node, "r", f"m{n}") for n in range(4)]
    session, base = node
    # A browser reconnects with the same URL plus the Last-Event-ID header.
    for query in ({"tail": "3"}, {"lastEventId": "earliest"}):
        headers = {"Last-Event-ID": published[1]}
        async with subscribe(session, base, ["r"], headers=headers, query=query) as sub:
            await sub.wait_for(2)
            assert ids(sub) == published[2:]


async def test_late_joiners_during_a_publish_storm_miss_nothing_and_repeat_nothing(
    node: Node,
) -> None:
    session, base = node
    published: list[str] = []
    done = asyncio.Event()

    async def storm() -> None:
        for n in range(300):
            published.append(await publish(*node, "storm", f"m{n}"))
        done.set()

    task = asyncio.create_task(storm())
    try:
        async with contextlib.AsyncExitStack() as stack:
            joiners = []
            for n in range(6):  # each joins at another point of the storm
                query = {"tail": "5"} if n % 2 else {"lastEventId": "earliest"}
                joining = subscribe(session, base, ["storm"], query=query)
                joiners.append(await stack.enter_async_context(joining))
            await done.wait()
            for sub in joiners:
                await sub.wait_for(1)
                first = published.index(sub.events[0].id)
                await sub.wait_for(len(published) - first)
                assert ids(sub) == published[first:], "in order, no gap, no duplicate"
    finally:
        await task


@pytest.mark.parametrize("start", [{"lastEventId": "earliest"}, {"tail": "10"}, "after the first"])
async def test_a_replay_over_max_replay_bytes_is_its_newest_part_with_a_trimmed_reset(
    start_broker_app: StartApp, start: dict[str, str] | str
) -> None:
    # Each event's frame is about 1 KB: a 4 KB bound keeps the newest 3 of 8.
    base = await start_broker_app(history_maxlen=100, max_replay_bytes=4096)
    async with aiohttp.ClientSession() as session:
        node = (session, base)
        published = [await publish(*node, "a" if n % 2 else "b", "x" * 1000) for n in range(8)]
        query = {"lastEventId": published[0]} if start == "after the first" else start
        assert isinstance(query, dict)
        async with subscribe(session, base, ["a", "b"], query=query) as sub:
            await sub.wait_for(4)
            reset, *kept = sub.events
            assert reset.event == "reset"
            body = orjson.loads(reset.data)
            assert (sorted(body["channels"]), body["reason"]) == (["a", "b"], "trimmed")
            assert [event.id for event in kept] == published[-3:]
            live = await publish(*node, "a", "live")
            assert (await sub.wait_for(5))[-1].id == live
