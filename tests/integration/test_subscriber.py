"""The public async subscriber (`broadcaster.subscribe`) against a real node on each
broker: events in order, and a stream the node ends is resumed after the last event it
yielded, with nothing missed and nothing twice. (Its scripted unit tests, shared with
`subscribe_sync`: tests/unit/test_subscriber.py.)"""

from __future__ import annotations

import asyncio
import time

from broadcaster import Event, HttpPublisher, subscribe, subscribe_sync
from tests.support.nodes import StartApp
from tests.support.publish import TOKEN
from tests.support.wait import wait_until


async def test_subscribe_follows_and_resumes_across_ended_streams(
    start_broker_app: StartApp,
) -> None:
    # Every stream ends after about a second: the subscriber reconnects by itself, and a
    # message is always on its way, so some are published while it is away.
    base = await start_broker_app(max_connection_age=1, retry_ms=0)
    notices: list[str] = []
    received: list[Event] = []
    events = subscribe(base, ["news"], last_event_id="earliest", notify=notices.append)
    async with HttpPublisher(base, TOKEN) as publisher:
        ids = [await publisher.publish("news", f"n{n}") for n in range(3)]
        async with asyncio.timeout(60):
            async for event in events:
                received.append(event)
                if sum(notice.startswith("reconnected") for notice in notices) < 2:
                    ids.append(await publisher.publish("news", f"n{len(ids)}"))
                elif len(received) >= len(ids):
                    break
        await events.aclose()
    assert [event.id for event in received] == ids
    assert [event.data for event in received] == [f"n{n}" for n in range(len(ids))]


async def test_subscribe_ends_once_every_channel_is_closed(start_broker_app: StartApp) -> None:
    base = await start_broker_app(retry_ms=0)
    received: list[Event] = []

    async def follow() -> None:
        async for event in subscribe(base, ["a", "b"], last_event_id="earliest"):
            received.append(event)

    async with HttpPublisher(base, TOKEN) as publisher:
        ids = [await publisher.publish("a", "one")]
        ids += await publisher.stream("b", ["x"])  # closes b
        following = asyncio.create_task(follow())
        try:
            await wait_until(lambda: len(received) == 3, 10, "the retained events")
            assert not following.done(), "a is open"
            ids.append(await publisher.publish("a", "bye", close=True))
            await asyncio.wait_for(following, 10)
        finally:
            following.cancel()
    assert [event.id for event in received] == ids
    assert [event.data for event in received] == ["one", "x", '{"chunks":1}', "bye"]


async def test_subscribe_sync_ends_at_a_closed_channels_end(start_broker_app: StartApp) -> None:
    base = await start_broker_app(retry_ms=0)
    async with HttpPublisher(base, TOKEN) as publisher:
        ids = await publisher.stream("answer", ["Hel", "lo"])
    deadline = time.monotonic() + 10

    def sleep(delay: float) -> None:  # (bounds the thread, should the end never come)
        assert time.monotonic() < deadline, "the subscription did not end"
        time.sleep(delay)

    def follow(last_event_id: str) -> list[Event]:
        events = subscribe_sync(
            base, ["answer"], last_event_id=last_event_id, read_timeout=5, sleep=sleep
        )
        return list(events)

    # What is retained, then the end; from the last id, the end at once.
    received = await asyncio.to_thread(follow, "earliest")
    assert [event.id for event in received] == ids
    assert await asyncio.to_thread(follow, ids[-1]) == []
