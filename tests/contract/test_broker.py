"""The broker contract: the same cases on every broker (the embedded one, Redis on a real
redis-server, and a real Redis Cluster of 3 shards), through the `Broker` interface the
hub uses (the subjects: conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as redis

from broadcaster.brokers.config import LibraryConfig
from broadcaster.brokers.protocol import IDEMPOTENCY_MAX_KEYS, KeyLimit
from broadcaster.core.history import Start
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.publication import Publication
from broadcaster.core.replay import Replay
from tests.contract.conftest import BROKERS, MAXLEN, Subject, make_subject


async def test_subscribed_channels_are_delivered_until_unsubscribed(subject: Subject) -> None:
    a, b = subject.ch("a"), subject.ch("b")
    await subject.broker.subscribe(a)
    await subject.publish(a, "one")
    await subject.publish(b, "not subscribed")
    assert await subject.received(1) == [(a, "one")]
    subject.broker.unsubscribe(a)
    await subject.broker.subscribe(b)
    await subject.publish(a, "after unsubscribe")
    await subject.publish(b, "two")
    assert await subject.received(2) == [(a, "one"), (b, "two")]


async def test_subscribe_and_unsubscribe_take_effect_in_call_order(subject: Subject) -> None:
    flip = subject.ch("flip")
    for _ in range(20):
        subject.broker.subscribe(flip)
        subject.broker.unsubscribe(flip)
    await subject.broker.subscribe(flip)
    await subject.publish(flip, "on")
    assert await subject.received(1) == [(flip, "on")]


async def test_publish_answers_increasing_ids_and_delivers_them(subject: Subject) -> None:
    a, b = subject.ch("a"), subject.ch("b")
    await subject.broker.subscribe(a)
    await subject.broker.subscribe(b)
    batch = [Publication(a if n % 2 else b, f"m{n}", "e" if n % 3 else None) for n in range(9)]
    ids = await subject.broker.publish(batch)
    positions = [EventId.parse(sent) for sent in ids]
    assert positions == sorted(positions) and len(set(ids)) == 9  # type: ignore[type-var]
    await subject.received(9)
    assert [m.id for _, m in subject.delivered] == ids
    assert [(m.data, m.event) for _, m in subject.delivered] == [(p.data, p.event) for p in batch]
    previous = [m.prev for c, m in subject.delivered if c == a]
    assert previous == [None, *ids[1::2][:-1]], "each names its channel's previous id"


async def test_a_repeated_idempotency_key_answers_the_first_id(subject: Subject) -> None:
    k, other = subject.ch("k"), subject.ch("other")
    first = await subject.publish(k, "x", key="once")
    assert await subject.publish(k, "again", key="once") == first
    assert await subject.publish(other, "x", key="once") != first
    replay = await subject.broker.replay([k], Start())
    assert [m.data for _, m in replay.messages] == ["x"]


async def test_a_retried_batch_answers_the_first_ids_of_what_was_applied(subject: Subject) -> None:
    a, b = subject.ch("a"), subject.ch("b")
    batch = [Publication(a, f"m{n}", None, f"key-{n}") for n in range(4)]
    applied = await subject.broker.publish(batch[:2])  # the first half went through
    again = await subject.broker.publish(batch)  # and the whole batch was sent again
    assert again[:2] == applied and len(set(again)) == 4
    positions = [EventId.parse(sent) for sent in again]
    assert positions == sorted(positions)  # type: ignore[type-var]
    replay = await subject.broker.replay([a], Start())
    assert [m.data for _, m in replay.messages] == ["m0", "m1", "m2", "m3"]
    # A key repeated inside one batch answers its first id: published once.
    twice = await subject.broker.publish(
        [Publication(b, "x", None, "k"), Publication(b, "y", None, "k")]
    )
    assert twice[0] == twice[1]
    assert [m.data for _, m in (await subject.broker.replay([b], Start())).messages] == ["x"]


@pytest.mark.slow
async def test_a_channel_remembers_a_bounded_number_of_keys_per_window(subject: Subject) -> None:
    k, other = subject.ch("k"), subject.ch("other")
    batch = [Publication(k, "x", None, f"key-{n}") for n in range(IDEMPOTENCY_MAX_KEYS)]
    for start in range(0, len(batch), 10_000):
        await subject.broker.publish(batch[start : start + 10_000])
    with pytest.raises(KeyLimit, match="too many idempotency keys on this channel"):
        await subject.broker.publish([Publication(k, "x", None, "one-more")])
    with pytest.raises(KeyLimit):  # a refused key is not remembered: its retry is refused
        await subject.broker.publish([Publication(k, "x", None, "one-more")])
    assert await subject.publish(k, "x", key="key-7") != ""  # a repeat is still answered
    assert await subject.publish(k, "unkeyed") != ""
    assert await subject.publish(other, "x", key="one-more") != ""


async def test_resume_replays_what_followed_on_every_channel_in_id_order(subject: Subject) -> None:
    a, b, c = subject.ch("a"), subject.ch("b"), subject.ch("c")
    names = {"a": a, "b": b, "c": c}
    ids = [await subject.publish(names[x], f"{x}{n}") for n, x in enumerate("abacba")]
    replay = await subject.broker.replay([a, b], Start.resume(ids[1]))
    assert [(ch, m.data) for ch, m in replay.messages] == [(a, "a2"), (b, "b4"), (a, "a5")]
    assert replay.resets == {} and str(replay.head) == ids[-1]
    nothing_new = await subject.broker.replay([a], Start.resume(ids[-1]))
    assert nothing_new.messages == [] and nothing_new.resets == {}


async def test_a_replay_asked_again_after_a_publish_includes_it(subject: Subject) -> None:
    a = subject.ch("a")
    first = await subject.publish(a, "1")
    before = await subject.broker.replay([a], Start.resume(first))
    assert before.messages == []
    await subject.publish(a, "2")  # at once: a replay shared between askers must not stale
    after = await subject.broker.replay([a], Start.resume(first))
    assert [m.data for _, m in after.messages] == ["2"]


async def test_history_that_cannot_answer_resets_with_its_reason(subject: Subject) -> None:
    t, u = subject.ch("t"), subject.ch("u")
    ids = [await subject.publish(t, f"m{n}") for n in range(MAXLEN + 3)]
    trimmed = await subject.broker.replay([t, u], Start.resume(ids[0]))
    assert trimmed.resets == {"trimmed": [t]} and trimmed.messages == []
    assert (await subject.broker.replay([t], Start.resume("nonsense"))).resets == {"malformed": [t]}
    ahead = str(EventId(EventId.parse(ids[-1]).ms, 10**9))  # type: ignore[union-attr]
    assert (await subject.broker.replay([t], Start.resume(ahead))).resets == {"unknown": [t]}
    frames = trimmed.frames().decode()
    assert frames.startswith("event: reset\n") and f"id: {ids[-1]}\n" in frames
    assert orjson.loads(trimmed.reset_messages()[0].data) == {
        "channels": [t],
        "reason": "trimmed",
    }


async def test_late_joiners_get_the_earliest_or_the_newest_retained(subject: Subject) -> None:
    a, b, c = subject.ch("a"), subject.ch("b"), subject.ch("c")
    names = {"a": a, "b": b, "c": c}
    ids = [await subject.publish(names[x], f"{x}{n}") for n, x in enumerate("abcabcab")]
    everything = await subject.broker.replay([a, b], Start())
    wanted = [sent for sent, channel in zip(ids, "abcabcab", strict=True) if channel != "c"]
    assert [m.id for _, m in everything.messages] == wanted
    newest = await subject.broker.replay([a, b, c], Start(tail=3))
    assert [m.id for _, m in newest.messages] == ids[-3:]
    assert (await subject.broker.replay([a], Start(tail=0))).messages == []


@pytest.mark.parametrize("subject", ["redis", "cluster"], indirect=True)
async def test_gaps_are_repaired_in_order(subject: Subject) -> None:
    # Only Redis's link can lose a message (pub/sub is at most once); the embedded broker
    # delivers in the same call that publishes.
    g = subject.ch("g")
    url = subject.redis_url if subject.cluster is None else subject.cluster.owner(g).url
    assert url is not None
    await subject.broker.subscribe(g)
    await subject.publish(g, "first")
    await subject.received(1)
    await subject.lose(g, "lost")
    async with redis.Redis.from_url(url) as client:
        await subject.publish(g, "after")
        assert await subject.received(3) == [(g, "first"), (g, "lost"), (g, "after")]
        # A dropped connection: what it missed is backfilled before anything newer.
        assert await client.client_kill_filter(_type="pubsub") == 1
        await subject.publish(g, "while reconnecting")
    assert await subject.received(4) == [
        (g, "first"),
        (g, "lost"),
        (g, "after"),
        (g, "while reconnecting"),
    ]


BOUND = 300_000  # MAX_REPLAY_BYTES of the paging subject: about 290 messages of 1 KB
KILOBYTE = "x" * 1000


@pytest.fixture(params=BROKERS)
async def paging(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    """A broker that retains 1,000 messages a channel and replays at most BOUND bytes."""
    subject = make_subject(request, LibraryConfig(history_maxlen=1000), max_replay_bytes=BOUND)
    await subject.broker.start(subject.deliver)
    yield subject
    await subject.broker.close()


async def fill(subject: Subject, channels: str, count: int) -> list[tuple[str, str]]:
    """`count` messages of 1 KB spread over `channels` (one letter each); (id, channel)
    of each."""
    names = [subject.ch(letter) for letter in channels]
    batch = [Publication(names[n % len(names)], KILOBYTE) for n in range(count)]
    ids = await subject.broker.publish(batch)
    return list(zip(ids, (p.channel for p in batch), strict=True))


async def written(replay: Replay) -> list[tuple[str | None, str | None, str]]:
    """(id, event, data) of every frame a client of `replay` is sent, page after page."""
    body = b"".join([data async for data, _ in replay.pieces()]).decode()
    frames = []
    for text in body.split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in text.split("\n"))
        frames.append((fields.get("id"), fields.get("event"), fields.get("data", "")))
    return frames


def newest_within(sent: list[tuple[str, str]], bound: int) -> list[str]:
    """The ids of the newest messages whose frames fit in `bound` bytes."""
    kept: list[str] = []
    size = 0
    for id_, _ in reversed(sent):
        size += len(Message(KILOBYTE, None, id_).frame())
        if size > bound:
            break
        kept.insert(0, id_)
    return kept


async def test_a_replay_longer_than_a_page_comes_whole_and_in_order(paging: Subject) -> None:
    a, b = paging.ch("a"), paging.ch("b")
    sent = await fill(paging, "ab", 200)  # 200 KB: pages of 128 KB, under the bound
    replay = await paging.broker.replay([a, b], Start())
    assert replay.more is not None and len(replay.items) < 200, "read a page at a time"
    assert [id_ for id_, _, _ in await written(replay)] == [id_ for id_, _ in sent]
    after = await paging.broker.replay([b], Start.resume(sent[9][0]))
    assert [f[0] for f in await written(after)] == [i for i, c in sent[10:] if c == b]


async def test_past_max_replay_bytes_the_newest_part_comes_after_a_trimmed_reset(
    paging: Subject,
) -> None:
    a, b, c = paging.ch("a"), paging.ch("b"), paging.ch("c")
    sent = await fill(paging, "abc", 600)
    replay = await paging.broker.replay([a, b], Start.resume(sent[0][0]))
    frames = await written(replay)
    wanted = [(id_, ch) for id_, ch in sent[1:] if ch != c]
    assert frames[0][1] == "reset"
    assert orjson.loads(frames[0][2]) == {"channels": [a, b], "reason": "trimmed"}
    assert [f[0] for f in frames[1:-1]] == newest_within(wanted, BOUND)
    assert frames[-1] == (sent[-1][0], None, "")  # the position: the head, no event
    # A tail past the bound: the channels whose messages within the tail were left out.
    tail = await written(await paging.broker.replay([a, b, c], Start(tail=300)))
    assert orjson.loads(tail[0][2])["channels"] == [a, b, c]
    assert [f[0] for f in tail[1:-1]] == newest_within(sent, BOUND)
    small = await written(await paging.broker.replay([a, b, c], Start(tail=6)))
    assert [f[0] for f in small] == [id_ for id_, _ in sent[-6:]]  # within both: no reset


async def test_a_batch_publishes_as_the_same_messages_one_by_one(subject: Subject) -> None:
    pattern = [("a", "e"), ("b", None), ("a", None), ("a", "e"), ("b", "e")]

    async def published(suffix: str, *, batched: bool) -> list[tuple[str, str, str | None, int]]:
        """What the subscriber got, by letter, data, event and which message was `prev`."""
        names = {letter: subject.ch(letter + suffix) for letter in "ab"}
        for name in names.values():
            await subject.broker.subscribe(name)
        batch = [Publication(names[x], f"{x}{n}", event) for n, (x, event) in enumerate(pattern)]
        start = len(subject.delivered)
        if batched:
            ids = await subject.broker.publish(batch)
        else:
            ids = [(await subject.broker.publish([p]))[0] for p in batch]
        positions = [EventId.parse(sent) for sent in ids]
        assert positions == sorted(positions) and len(set(ids)) == len(ids)  # type: ignore[type-var]
        await subject.received(start + len(batch))
        place = {sent: n for n, sent in enumerate(ids)}
        return [
            (channel[-2], m.data, m.event, place.get(m.prev or "", -1))
            for channel, m in subject.delivered[start:]
        ]

    assert await published("1", batched=False) == await published("2", batched=True)
