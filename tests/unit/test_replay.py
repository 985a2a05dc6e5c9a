"""Replays written a page at a time: the same bytes as whole, one page held per reader."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from broadcaster.core.history import ChannelHistory, Entry, Gap, Head, Snapshot, replay
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.replay import Page, Replay


def item(seq: int, channel: str = "a") -> tuple[EventId, str, Message]:
    return (EventId(1, seq), channel, Message("x" * 90, None, f"1-{seq}"))


async def written(replay: Replay) -> tuple[bytes, int]:
    pieces = [piece async for piece in replay.pieces()]
    return b"".join(data for data, _ in pieces), sum(events for _, events in pieces)


async def test_a_paged_replay_writes_what_the_whole_one_would_in_pieces() -> None:
    whole = Replay(EventId(1, 6), [item(n) for n in range(1, 7)], {"trimmed": ["b"]})
    size = len(whole.items[0][2].frame())
    paged = whole.paged(2 * size)
    assert [m.id for _, m in paged.messages] == ["1-1", "1-2"]  # the shared first page
    first, again = await written(paged), await written(paged)
    assert first == again == (whole.frames(), 6)  # each reader pages on its own
    pieces = [data async for data, _ in paged.pieces()]
    assert len(pieces) == 4 and pieces[-1] == b"id: 1-6\n\n"  # after a reset: the position
    assert whole.paged(6 * size) is whole  # one page: nothing to split


async def test_a_failover_notice_past_the_first_page_waits_for_its_place() -> None:
    def entry(seq: int, prev: int | None) -> Entry:
        before = EventId(1, prev) if prev else None
        return Entry(EventId(1, seq), before, item(seq)[2])

    later = [entry(3, 2), entry(10, 3)]

    async def more() -> AsyncIterator[Page]:
        yield [(e.id, "a", e.message) for e in later]

    gaps = (Gap(EventId(1, 3), EventId(1, 10), EventId(1, 4)),)  # 1-4 was lost
    first = {"a": ChannelHistory(True, [entry(2, None)])}
    read = Snapshot(Head(EventId(1, 10), 0), 1, 0, first, gaps, more=more)
    result = replay("1-1", read)
    assert [m.id for _, m in result.messages] == ["1-2"] and len(result.notices) == 1
    data, events = await written(result)
    frames = data.decode().split("\n\n")
    assert [f.split("\n")[0] for f in frames[:4]] == [
        "id: 1-2",
        "id: 1-3",
        "event: reset",
        "id: 1-10",
    ]
    assert orjson.loads(frames[2].split("data: ")[1]) == {"channels": ["a"], "reason": "failover"}
    assert frames[4] == "id: 1-10" and events == 4  # then the position, after a notice


def test_channels_cut_by_the_byte_bound_are_told_trimmed() -> None:
    kept = {"a": ChannelHistory(True, []), "b": ChannelHistory(True, [])}
    read = Snapshot(Head(EventId(1, 10), 0), 1, 0, kept, cut=("b",))
    assert replay("1-1", read).resets == {"trimmed": ["b"]}
