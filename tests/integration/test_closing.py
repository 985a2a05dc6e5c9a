"""Answers that close, over HTTP on each broker: a live stream ends after the closing
message, a later request gets what is retained and then the end, one that has it all
gets 204 (which stops an EventSource), and a closed channel takes publishes again only
when one reopens it."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from broadcaster.brokers.protocol import CLOSED_REASON
from tests.support.client import Subscriber, subscribe
from tests.support.metrics import metric
from tests.support.nodes import StartApp
from tests.support.publish import post, publish
from tests.support.sse import Event


async def ended(sub: Subscriber) -> None:
    """Wait until the node ends `sub`'s response."""
    await asyncio.wait_for(sub.ended.wait(), 10)


async def status_of(
    session: aiohttp.ClientSession, base: str, channels: list[str], **query: str
) -> tuple[int, bytes]:
    """The status and whole body of a GET /events that is expected to end by itself."""
    params = [("channel", channel) for channel in channels] + list(query.items())
    headers = {}
    if "last" in query:
        headers["Last-Event-ID"] = params.pop()[1]
    async with session.get(
        f"{base}/events", params=params, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
    ) as response:
        return response.status, await response.read()


async def test_a_live_stream_ends_after_the_closing_message_and_its_reconnect_gets_204(
    start_broker_app: StartApp, session: aiohttp.ClientSession
) -> None:
    base = await start_broker_app()
    first = await publish(session, base, "answer", "Hello")
    async with subscribe(session, base, ["answer"], headers={"Last-Event-ID": first}) as sub:
        token = await publish(session, base, "answer", " world", event="token")
        done = await publish(session, base, "answer", "{}", event="done", close=True)
        await ended(sub)
        assert sub.events == [Event(" world", "token", token), Event("{}", "done", done)]
        assert sub.raw.endswith(b"event: done\ndata: {}\n\n")
    # The browser comes back with the last id: nothing more will come.
    assert await status_of(session, base, ["answer"], last=done) == (204, b"")
    # From before the end, or from the start: what is retained, then the end.
    status, body = await status_of(session, base, ["answer"], last=first)
    assert status == 200 and body.endswith(b"event: done\ndata: {}\n\n") and b"world" in body
    status, body = await status_of(session, base, ["answer"], lastEventId="earliest")
    assert status == 200 and b"data: Hello" in body and body.endswith(b"data: {}\n\n")
    status, body = await status_of(session, base, ["answer"], tail="1")
    assert status == 200 and b"world" not in body and body.endswith(b"data: {}\n\n")
    # Asking for nothing of the past, of a closed channel: nothing will come.
    assert await status_of(session, base, ["answer"]) == (204, b"")
    assert await metric(session, base, "broadcaster_streams_closed_total") == 4
    assert await metric(session, base, "broadcaster_no_content_total") == 2


async def test_a_stream_of_several_channels_ends_when_all_are_closed(
    start_broker_app: StartApp, session: aiohttp.ClientSession
) -> None:
    base = await start_broker_app()
    async with subscribe(session, base, ["a", "b"]) as sub:
        a_end = await publish(session, base, "a", "a done", close=True)
        b_live = await publish(session, base, "b", "b goes on")
        assert await sub.wait_for(2) == [Event("a done", id=a_end), Event("b goes on", id=b_live)]
        assert not sub.ended.is_set()
        b_end = await publish(session, base, "b", "b done", close=True)
        await ended(sub)
        assert [event.id for event in sub.events] == [a_end, b_live, b_end]
    assert (await status_of(session, base, ["a", "b"], last=b_end))[0] == 204
    # One of them open again (a stream that follows it waits for more):
    await publish(session, base, "a", "a again", reopen=True)
    async with subscribe(session, base, ["a", "b"], headers={"Last-Event-ID": b_end}) as sub:
        assert [event.data for event in await sub.wait_for(1)] == ["a again"]
        later = await publish(session, base, "a", "still open")
        assert (await sub.wait_for(2))[1].id == later
        assert not sub.ended.is_set()


async def test_a_closed_channel_refuses_publishes_unless_they_reopen_it(
    start_broker_app: StartApp, session: aiohttp.ClientSession
) -> None:
    base = await start_broker_app()
    await publish(session, base, "c", "bye", close=True)
    status, answer = await post(session, base, {"channel": "c", "data": "late"})
    assert status == 409 and answer.strip() == CLOSED_REASON
    status, answer = await post(session, base, [{"channel": "c", "data": "x", "close": "yes"}])
    assert status == 400 and "close" in answer
    batch = [
        {"channel": "c", "data": "again", "reopen": True},
        {"channel": "c", "data": "over", "close": True},
    ]
    status, ids = await post(session, base, batch)
    assert status == 200 and len(ids) == 2
    async with subscribe(session, base, ["c"], headers={"Last-Event-ID": ids[0]}) as sub:
        await ended(sub)
        assert sub.events == [Event("over", id=ids[1])]


@pytest.mark.parametrize("closing_first", [True, False])
async def test_a_subscriber_joining_as_the_channel_closes_gets_everything_then_the_end(
    start_broker_app: StartApp, session: aiohttp.ClientSession, closing_first: bool
) -> None:
    # A channel's close is learnt once per node, as its first subscriber subscribes: a
    # node that had never heard of the channel, or one that follows it already.
    base = await start_broker_app()
    start = await publish(session, base, "d", "start")
    async with subscribe(session, base, ["other", "d"] if closing_first else ["d"]) as watcher:
        end = await publish(session, base, "d", "end", close=True)
        await watcher.wait_for(1)
        if not closing_first:
            await ended(watcher)
        status, body = await status_of(session, base, ["d"], last=start)
        assert status == 200 and body.endswith(f"id: {end}\ndata: end\n\n".encode())
        assert not (closing_first and watcher.ended.is_set()), "'other' is still open"
