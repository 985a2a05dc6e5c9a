"""Channels that close, on every broker: the closing message, the refusal after it, the
explicit reopen, and batches, retries and backfills that carry them."""

from __future__ import annotations

import pytest

from broadcaster.brokers.protocol import ChannelClosed
from broadcaster.core.history import Start
from broadcaster.core.ids import EventId
from broadcaster.core.publication import Publication
from tests.contract.conftest import Subject


async def test_a_closing_message_is_delivered_marked_and_the_channel_reads_closed(
    subject: Subject,
) -> None:
    a, b = subject.ch("a"), subject.ch("b")
    await subject.broker.subscribe(a)
    first = await subject.publish(a, "one")
    assert await subject.broker.closed([a, b]) == {}
    [last] = await subject.broker.publish([Publication(a, "bye", "done", close=True)])
    await subject.received(2)
    assert [m.closes for _, m in subject.delivered] == [False, True]
    assert [m.id for _, m in subject.delivered] == [first, last]
    assert await subject.broker.closed([a, b]) == {a: EventId.parse(last)}
    # Closed, it is still history: a late joiner gets every event.
    replay = await subject.broker.replay([a], Start())
    assert [m.data for _, m in replay.messages] == ["one", "bye"]


async def test_a_closed_channel_refuses_publishes_until_one_reopens_it(subject: Subject) -> None:
    a, b = subject.ch("a"), subject.ch("b")
    await subject.broker.subscribe(a)
    await subject.broker.publish([Publication(a, "bye", close=True)])
    with pytest.raises(ChannelClosed, match="channel is closed"):
        await subject.publish(a, "late")
    await subject.publish(b, "others are open")
    [again] = await subject.broker.publish([Publication(a, "again", reopen=True)])
    assert await subject.broker.closed([a]) == {}
    await subject.publish(a, "and open")
    assert await subject.received(3) == [(a, "bye"), (a, "again"), (a, "and open")]
    assert [m.closes for _, m in subject.delivered] == [True, False, False]
    [_, reopened, after] = [m for _, m in subject.delivered]
    assert reopened.id == again and after.prev == again, "the chain goes on through a close"


async def test_reopen_and_close_together_publish_one_last_message(subject: Subject) -> None:
    a = subject.ch("a")
    await subject.broker.publish([Publication(a, "first answer", close=True)])
    both = Publication(a, "second answer", reopen=True, close=True)
    [last] = await subject.broker.publish([both])
    assert await subject.broker.closed([a]) == {a: EventId.parse(last)}
    assert Publication(a, "x", reopen=True).flags == "reopen"  # (reopening an open one: a no-op)
    await subject.broker.publish([Publication(a, "third", reopen=True)])
    assert await subject.broker.closed([a]) == {}


async def test_a_batch_closes_as_single_publishes_do(subject: Subject) -> None:
    a, b = subject.ch("a"), subject.ch("b")
    await subject.broker.subscribe(a)
    await subject.broker.subscribe(b)
    batch = [
        Publication(a, "a1"),
        Publication(b, "b1", close=True),
        Publication(a, "a2", close=True),
        Publication(a, "a3", reopen=True),
        Publication(b, "b2", reopen=True, close=True),
    ]
    ids = await subject.broker.publish(batch)
    positions = [EventId.parse(sent) for sent in ids]
    assert positions == sorted(positions) and len(set(ids)) == 5  # type: ignore[type-var]
    await subject.received(5)
    assert [(m.id, m.data, m.closes) for _, m in subject.delivered] == [
        (sent, p.data, p.close) for sent, p in zip(ids, batch, strict=True)
    ]
    assert await subject.broker.closed([a, b]) == {b: positions[4]}


async def test_a_batch_stops_at_a_closed_channel_having_published_what_came_before(
    subject: Subject,
) -> None:
    a = subject.ch("a")
    batch = [Publication(a, "one"), Publication(a, "bye", close=True), Publication(a, "late")]
    with pytest.raises(ChannelClosed):
        await subject.broker.publish(batch)
    replay = await subject.broker.replay([a], Start())
    assert [m.data for _, m in replay.messages] == ["one", "bye"]
    assert list(await subject.broker.closed([a])) == [a]


async def test_a_retried_close_answers_its_first_id(subject: Subject) -> None:
    a = subject.ch("a")
    closing = Publication(a, "bye", "done", "key-1", close=True)
    [first] = await subject.broker.publish([closing])
    assert await subject.broker.publish([closing]) == [first]  # not ChannelClosed
    with pytest.raises(ChannelClosed):
        await subject.broker.publish([Publication(a, "other", None, "key-2")])


@pytest.mark.parametrize("subject", ["redis", "cluster"], indirect=True)
async def test_a_close_that_pub_sub_dropped_is_backfilled_as_a_close(subject: Subject) -> None:
    g = subject.ch("g")
    await subject.broker.subscribe(g)
    await subject.publish(g, "first")
    await subject.received(1)
    await subject.lose(g, "bye", closes=True)
    assert list(await subject.broker.closed([g])) == [g]
    await subject.broker.publish([Publication(g, "reopened", reopen=True)])
    assert await subject.received(3) == [(g, "first"), (g, "bye"), (g, "reopened")]
    assert [m.closes for _, m in subject.delivered] == [False, True, False]
