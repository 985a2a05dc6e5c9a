"""Composite ids: a stream of several groups resumes exactly from any event it got.

Each group is an embedded broker of its own (its own sequence, as a shard's group on a
Redis Cluster), behind one broker that routes by group. A client reads its replay (from
the earliest, or from the newest few), is cut off after any event, more is published,
and it resumes with the id it held: group by group, what it got and what it gets again
are every message once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadcaster.brokers.config import LibraryConfig
from broadcaster.brokers.memory import MemoryBroker
from broadcaster.core.history import Start
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.positions import Positions
from broadcaster.core.publication import Publication
from broadcaster.core.replay import Replay
from broadcaster.delivery.across import ComposedReplay, replay_across
from broadcaster.delivery.composite import Composite, composed, just_before
from tests.support.sse import Event, Parser

CHANNELS = {"a1": "A", "b1": "B", "c1": "C", "c2": "C"}
GROUPS = {"A": ["a1"], "B": ["b1"], "C": ["c1", "c2"]}


class Sharded:
    """Replays of each group from a broker of its own."""

    def __init__(self) -> None:
        config = LibraryConfig(history_maxlen=1000)
        self.groups = {name: MemoryBroker(config=config) for name in GROUPS}

    def group(self, channel: str) -> str:
        return CHANNELS[channel]

    async def publish(self, channel: str, data: str) -> str:
        [sent] = await self.groups[CHANNELS[channel]].publish([Publication(channel, data)])
        return sent

    async def closed(self, channels: Sequence[str]) -> dict[str, EventId]:
        return {}

    async def replay(self, channels: Sequence[str], start: Start) -> Replay:
        [group] = {CHANNELS[channel] for channel in channels}
        return await self.groups[group].replay(channels, start)


def events(replayed: ComposedReplay) -> list[Event]:
    return Parser().feed(replayed.body.decode())


def by_group(got: list[Event]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {name: [] for name in GROUPS}
    for event in got:
        if event.event == "message":
            found[CHANNELS[event.data.partition(":")[0]]].append(event.data)
    return found


async def scenario(first: list[str], later: list[str], cut: int, tail: int | None) -> None:
    broker = Sharded()
    published: dict[str, list[str]] = {name: [] for name in GROUPS}
    for n, channel in enumerate(first):
        data = f"{channel}:{n}"
        await broker.publish(channel, data)
        published[CHANNELS[channel]].append(data)
    start = Start() if tail is None else Start(tail=tail)
    replayed = await replay_across(broker, GROUPS, start)  # type: ignore[arg-type]
    got = [e for e in events(replayed) if e.event == "message"]
    assert len(got) == (len(first) if tail is None else min(tail, len(first)))
    kept = got[: cut % (len(got) + 1)]
    held = kept[-1].id if kept else str(replayed.positions) if not got else None
    for n, channel in enumerate(later):
        data = f"{channel}:{len(first) + n}"
        await broker.publish(channel, data)
        published[CHANNELS[channel]].append(data)
    if held is None:
        return  # cut off before any event and any id: a browser starts afresh
    again = events(await replay_across(broker, GROUPS, Start.resume(held)))  # type: ignore[arg-type]
    assert all(e.event == "message" for e in again), "no reset: nothing was lost"
    mine, theirs = by_group(kept), by_group(again)
    for group, sent in published.items():
        whole = mine[group] + theirs[group]
        assert whole == sent[len(sent) - len(whole) :], f"group {group} once, in order"
        if tail is None:
            assert whole == sent, f"group {group}: everything"


@settings(max_examples=150, deadline=None)
@given(
    first=st.lists(st.sampled_from(sorted(CHANNELS)), max_size=12),
    later=st.lists(st.sampled_from(sorted(CHANNELS)), max_size=6),
    cut=st.integers(0, 20),
    tail=st.none() | st.integers(0, 8),
)
def test_a_stream_of_several_groups_resumes_exactly_from_any_event(
    first: list[str], later: list[str], cut: int, tail: int | None
) -> None:
    asyncio.run(scenario(first, later, cut, tail))


async def test_an_id_of_other_groups_or_another_form_resets_and_starts_at_every_head() -> None:
    broker = Sharded()
    for channel in CHANNELS:
        await broker.publish(channel, f"{channel}:0")
    heads = (await replay_across(broker, GROUPS, Start(tail=0))).positions  # type: ignore[arg-type]
    foreign = str(Positions.start({"A": EventId(1, 1), "X": EventId(1, 1), "C": EventId(1, 1)}))
    for given_id, reason in (("nonsense", "malformed"), ("1-1", "malformed"), (foreign, "unknown")):
        replayed = await replay_across(broker, GROUPS, Start.resume(given_id))  # type: ignore[arg-type]
        [reset, position] = [*events(replayed), None][:2]
        assert reset is not None and reset.event == "reset" and reason in reset.data
        assert replayed.positions == heads
        assert position is None and replayed.body.endswith(f"id: {heads}\n\n".encode())


def test_a_live_frame_carries_the_streams_own_id_and_is_dropped_once_had() -> None:
    composite = Composite({"a1": "A", "c1": "C"})
    start = Positions.start({"A": EventId(5, 1), "C": EventId(5, 2)})
    early = Message("x", None, "5-1")  # the replay had it
    composite.hold("a1", early)
    assert composite.begin(start) == []
    message = Message("hi\nthere", "note", "6-3", "5-1")
    frame = composite.frame("a1", message)
    moved = start.moved("A", EventId(6, 3))
    assert composite.positions == moved
    assert frame == f"id: {moved}\nevent: note\ndata: hi\ndata: there\n\n".encode()
    assert str(moved).startswith("6-3_5-2~")
    assert composite.frame("a1", message) is None, "once"
    raw = Message("plain text")
    assert composite.frame("c1", raw) == raw.frame(), "raw text: the shared frame"
    assert (
        composed(message, start) == f"id: {start}\n".encode() + message.frame()[len("id: 6-3\n") :]
    )


@pytest.mark.parametrize(
    ("position", "before"),
    [
        (EventId(9, 4), EventId(9, 3)),
        (EventId(9, 0), EventId(8, 0)),
        (EventId(0, 0), EventId(0, 0)),
    ],
)
def test_just_before_an_id_is_the_position_whose_next_message_it_is(
    position: EventId, before: EventId
) -> None:
    assert just_before(position) == before
