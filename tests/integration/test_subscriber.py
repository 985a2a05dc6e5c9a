"""The public async subscriber (`broadcaster.subscribe`) against a real node on each
broker: events in order, and a stream the node ends is resumed after the last event it
yielded, with nothing missed and nothing twice. (Its scripted unit tests, shared with
`subscribe_sync`: tests/unit/test_subscriber.py.)"""

from __future__ import annotations

import asyncio

from broadcaster import Event, HttpPublisher, subscribe
from tests.support.nodes import StartApp
from tests.support.publish import TOKEN


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
