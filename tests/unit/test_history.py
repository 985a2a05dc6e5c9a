"""Ids and the resume decision: replay what was missed, or say why not."""

from __future__ import annotations

import orjson
import pytest

from broadcaster.brokers.memory import MemoryBroker
from broadcaster.core.history import (
    ChannelHistory,
    Entry,
    Gap,
    Head,
    Snapshot,
    Start,
    replay,
)
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.publication import Publication
from broadcaster.core.replay import Replay

HEAD = Head(EventId(5000, 50), epoch_ms=1000)


def entry(ms: int, seq: int, prev: tuple[int, int] | None) -> Entry:
    id_ = EventId(ms, seq)
    before = EventId(*prev) if prev else None
    return Entry(id_, before, Message(f"m{seq}", None, str(id_), str(before) if before else None))


def snapshot(channels: dict[str, ChannelHistory], now: int = 6000, ttl: int = 0) -> Snapshot:
    return Snapshot(HEAD, now, ttl, channels)


@pytest.mark.parametrize("text", ["12-3", "0-0", "999999999999999-1"])
def test_ids_parse_and_print_back(text: str) -> None:
    assert str(EventId.parse(text)) == text


@pytest.mark.parametrize("text", [None, "", "12", "12-", "-3", "a-b", "1-2-3", " 1-2", "1_000-2"])
def test_malformed_ids_parse_to_none(text: str | None) -> None:
    assert EventId.parse(text) is None


def test_ids_order_by_time_then_sequence() -> None:
    assert EventId(1, 9) < EventId(2, 1) < EventId(2, 2)


def test_missed_messages_of_several_channels_merge_in_publish_order() -> None:
    # Ids tie on the millisecond across channels: the sequence orders them.
    a = [entry(2000, 11, (1500, 9)), entry(2001, 14, (2000, 11))]
    b = [entry(2000, 12, (2000, 10)), entry(2001, 13, (2000, 12))]
    result = replay(
        "2000-10", snapshot({"a": ChannelHistory(True, a), "b": ChannelHistory(True, b)})
    )
    assert [(channel, m.id) for channel, m in result.messages] == [
        ("a", "2000-11"),
        ("b", "2000-12"),
        ("b", "2001-13"),
        ("a", "2001-14"),
    ]
    assert result.resets == {} and result.head == HEAD.last


def test_a_trimmed_gap_is_a_reset() -> None:
    # The first retained entry after the client's id follows one the client never got.
    after = EventId(2000, 10)
    kept = ChannelHistory.after(after, True, [entry(3000, 20, (2500, 15))])
    assert kept.broken
    result = replay(str(after), snapshot({"a": kept}))
    assert result.resets == {"trimmed": ["a"]} and result.messages == []


def test_nothing_new_is_no_reset() -> None:
    assert replay("2000-10", snapshot({"a": ChannelHistory(True, [])})).resets == {}


@pytest.mark.parametrize(
    ("after", "reason"),
    [("garbage", "malformed"), ("5000-51", "unknown"), ("900-3", "unknown")],
)
def test_ids_from_nowhere_are_resets(after: str, reason: str) -> None:
    result = replay(
        after, snapshot({"a": ChannelHistory(True, []), "b": ChannelHistory(False, [])})
    )
    assert result.resets == {reason: ["a", "b"]}


def test_any_id_is_unknown_to_an_empty_sequence() -> None:
    result = replay("5-1", Snapshot(None, 6000, 0, {"a": ChannelHistory(False, [])}))
    assert result.resets == {"unknown": ["a"]} and result.head is None


def test_expired_history_is_a_reset_only_when_the_id_is_older_than_the_ttl() -> None:
    gone = {"a": ChannelHistory(False, [])}
    assert replay("2000-10", snapshot(gone, now=6000, ttl=5000)).resets == {}
    assert replay("2000-10", snapshot(gone, now=8000, ttl=5000)).resets == {"expired": ["a"]}


def test_reset_events_name_channels_and_reason() -> None:
    notices = Replay(None, resets={"trimmed": ["a", "b"]}).reset_messages()
    assert [(m.event, orjson.loads(m.data)) for m in notices] == [
        ("reset", {"channels": ["a", "b"], "reason": "trimmed"})
    ]


def gap(after: str, before: str, seen: str | None = None) -> Gap:
    parsed = Gap.parse(f"{after}|{before}|{seen or after}")
    assert parsed is not None
    return parsed


def test_a_gap_hides_lost_ids_from_clients_behind_them() -> None:
    quiet = gap("5000-10", "15000-1000010")
    delivered = gap("5000-10", "15000-1000010", seen="5001-12")
    assert not quiet.hides(EventId(4000, 8)), "nothing lost was delivered: nothing missed"
    assert delivered.hides(EventId(4000, 8)), "behind a lost message somebody got"
    assert quiet.hides(EventId(5001, 11)), "holds a lost id: what followed it is unknown"
    assert not delivered.hides(EventId(15000, 1000010))
    assert Gap.parse("garbage") is None and Gap.parse("1-1|2-2") is None


def test_across_a_failover_the_retained_are_replayed_around_a_notice() -> None:
    before = [entry(4000, 8, None), entry(5000, 10, (4000, 8))]
    after = [entry(15000, 1000010, (5000, 10))]
    history = {"a": ChannelHistory(True, [*before, *after])}
    gaps = (gap("5000-10", "15000-1000010", "5001-12"),)
    read = Snapshot(Head(EventId(15000, 1000010), 0), 16000, 0, history, gaps)
    result = replay("3000-7", read)
    assert result.resets == {}
    assert [(m.event, m.id) for _, m in result.messages] == [
        (None, "4000-8"),
        (None, "5000-10"),
        ("reset", None),
        (None, "15000-1000010"),
    ]
    assert orjson.loads(result.messages[2][1].data) == {"channels": ["a"], "reason": "failover"}
    # A client holding a lost id, before anything new: the notice, then the position.
    retained = {"a": ChannelHistory(True, [])}  # nothing retained after the lost id
    only_old = Snapshot(Head(EventId(5000, 10), 0), 6000, 0, retained, gaps)
    held = replay("5001-12", only_old)
    assert held.resets == {} and [m.event for _, m in held.messages] == ["reset"]
    assert held.frames().endswith(b"id: 5000-10\n\n")


async def test_the_embedded_broker_shares_a_replay_until_the_next_publish() -> None:
    broker = MemoryBroker()
    [first] = await broker.publish([Publication("a", "1")])
    await broker.publish([Publication("a", "2")])
    one = await broker.replay(["a"], Start.resume(first))
    assert await broker.replay(["a"], Start.resume(first)) is one  # encoded once, shared
    await broker.publish([Publication("a", "3")])
    fresh = await broker.replay(["a"], Start.resume(first))
    assert fresh is not one and [m.data for _, m in fresh.messages] == ["2", "3"]


CHANNELS = ["a", "b"]


def test_a_bounded_replay_keeps_its_newest_messages_and_resets_the_rest() -> None:
    items = [
        (EventId(1, n), "a" if n % 2 else "b", Message("x" * 90, None, f"1-{n}"))
        for n in range(1, 7)
    ]
    replay = Replay(EventId(1, 6), items)
    size = len(items[0][2].frame())
    assert replay.bounded(6 * size, CHANNELS) is replay  # within the bound: itself
    bounded = replay.bounded(2 * size + 1, CHANNELS)
    assert [message.id for _, message in bounded.messages] == ["1-5", "1-6"]
    assert bounded.resets == {"trimmed": ["a", "b"]}
    assert bounded.head == replay.head
