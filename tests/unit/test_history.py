"""Ids and the resume decision: replay what was missed, or say why not."""

from __future__ import annotations

import orjson
import pytest

from broadcaster.history import (
    ChannelHistory,
    Entry,
    EventId,
    Head,
    Replay,
    Snapshot,
    replay,
)
from broadcaster.message import Message

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
    result = replay("2000-10", snapshot({"a": ChannelHistory(True, [entry(3000, 20, (2500, 15))])}))
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
