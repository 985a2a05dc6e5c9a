"""In-order, gap-free delivery over a lossy link."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from broadcaster.brokers.redis.sequencer import Sequencer
from broadcaster.core.history import ChannelHistory, Entry, Head, Snapshot
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from tests.support.wait import wait_until


def message(seq: int, prev: int | None) -> Message:
    return Message(f"m{seq}", None, f"1-{seq}", None if prev is None else f"1-{prev}", 1)


class History:
    """A channel's retained messages; reads can be made to wait."""

    def __init__(self, *messages: Message) -> None:
        self.messages = list(messages)
        self.gate = asyncio.Event()
        self.gate.set()
        self.reads = 0

    async def read(self, positions: Mapping[str, str]) -> Snapshot:
        self.reads += 1
        await self.gate.wait()
        [(channel, after)] = positions.items()
        position = EventId.parse(after)
        assert position is not None
        entries = [
            Entry(EventId.parse(m.id), EventId.parse(m.prev), m)  # type: ignore[arg-type]
            for m in self.messages
            if EventId.parse(m.id) > position  # type: ignore[operator]
        ]
        head = Head(EventId.parse(self.messages[-1].id), 1)  # type: ignore[arg-type]
        return Snapshot(head, 1, 0, {channel: ChannelHistory.after(position, True, entries)})

    async def head(self) -> EventId | None:
        self.reads += 1
        await self.gate.wait()
        return EventId.parse(self.messages[-1].id) if self.messages else None


def sequencer(
    history: History, rejected: list[str] | None = None, now_ms: int = 1000
) -> tuple[Sequencer, list[str]]:
    delivered: list[str] = []

    async def barrier() -> None:
        pass

    seq = Sequencer(
        history,
        lambda _, m: delivered.append(m.data),
        barrier,
        retry_errors=(OSError,),
        rejected=lambda _, m: (rejected if rejected is not None else []).append(m.data),
        clock=lambda: now_ms / 1000,
    )
    return seq, delivered


def at(ms: int, seq: int, prev: str | None = None) -> Message:
    return Message(f"{ms}-{seq}", None, f"{ms}-{seq}", prev, ms)


async def test_a_lost_message_is_backfilled_before_later_ones() -> None:
    history = History(*(message(n, n - 1 if n > 1 else None) for n in range(1, 6)))
    seq, delivered = sequencer(history)
    history.gate.clear()
    seq.receive("c", message(1, None))
    seq.receive("c", message(2, 1))
    seq.receive("c", message(4, 3))  # 3 never arrived
    seq.receive("c", message(5, 4))  # waits behind the backfill
    assert delivered == ["m1", "m2"]
    history.gate.set()
    await wait_until(lambda: len(delivered) == 5, 5, "the backfill")
    assert delivered == ["m1", "m2", "m3", "m4", "m5"]


async def test_raw_and_duplicate_messages() -> None:
    seq, delivered = sequencer(History(message(1, None)))
    seq.receive("c", Message("raw"))
    seq.receive("c", message(1, None))
    seq.receive("c", message(1, None))
    assert delivered == ["raw", "m1"]


async def test_after_a_reconnect_held_channels_resume_from_their_last_id() -> None:
    history = History(*(message(n, n - 1 if n > 1 else None) for n in range(1, 5)))
    seq, delivered = sequencer(history)
    seq.receive("c", message(1, None))
    # A channel that delivered nothing yet resumes from the newest id the node knew.
    assert seq.hold(["c", "never-delivered"]) == {"c", "never-delivered"}
    seq.receive("c", message(4, 3))  # live again; 2 and 3 were published meanwhile
    seq.backfill(["c"])
    await wait_until(lambda: len(delivered) == 4, 5, "the backfill")
    assert delivered == ["m1", "m2", "m3", "m4"]
    assert history.reads == 1


async def test_a_replay_read_while_the_link_was_down_moves_no_delivered_channel() -> None:
    # A client resumed (history up to 3) while the link was down: this node's other
    # clients of `c` stopped at 1 and must get 2 and 3 from the next backfill.
    history = History(*(message(n, n - 1 if n > 1 else None) for n in range(1, 5)))
    seq, delivered = sequencer(history)
    seq.receive("c", message(1, None))
    seq.replayed(["c", "new"], EventId(1, 3), caught_up=False)
    assert seq.hold(["c", "new"]) == {"c", "new"}  # `new` resumes from the replay's head
    seq.receive("c", message(4, 3))
    seq.backfill(["c"])
    await wait_until(lambda: len(delivered) == 4, 5, "the backfill")
    assert delivered == ["m1", "m2", "m3", "m4"]


async def test_a_replay_read_while_the_link_was_up_is_where_a_backfill_starts() -> None:
    history = History(*(message(n, n - 1 if n > 1 else None) for n in range(1, 5)))
    seq, delivered = sequencer(history)
    seq.receive("c", message(1, None))
    seq.replayed(["c"], EventId(1, 3), caught_up=True)  # 2 and 3 went past the reader
    seq.hold(["c"])
    seq.receive("c", message(4, 3))
    seq.backfill(["c"])
    await wait_until(lambda: len(delivered) == 2, 5, "the backfill")
    assert delivered == ["m1", "m4"]


async def test_an_id_beyond_the_horizon_that_the_head_has_not_reached_is_dropped() -> None:
    # A forged envelope (99999999999999-999999) must not become the channel's position:
    # every genuine message after it would be dropped as delivered already.
    history = History(at(1000, 1), at(1001, 2))
    rejected: list[str] = []
    seq, delivered = sequencer(history, rejected)
    seq.receive("c", at(1000, 1))
    seq.receive("c", at(99_999_999_999_999, 999_999, prev="1000-1"))
    seq.receive("c", at(1001, 2, prev="1000-1"))  # held behind the check, then delivered
    await wait_until(lambda: len(delivered) == 2, 5, "the genuine messages")
    assert delivered == ["1000-1", "1001-2"]
    assert rejected == ["99999999999999-999999"]
    assert seq.seen == EventId(1001, 2)
    seq.started("later")  # a channel subscribed afterwards starts from the real position
    seq.receive("later", at(1002, 3))
    assert delivered[-1] == "1002-3"


async def test_an_id_beyond_the_horizon_that_the_head_confirms_is_delivered_in_order() -> None:
    # A failover moves ids 10 s of clock ahead: genuine, and confirmed by one head read.
    ahead = 1000 + 60_000
    history = History(at(1000, 1), at(ahead, 2), at(ahead, 3))
    seq, delivered = sequencer(history)
    seq.receive("c", at(1000, 1))
    history.gate.clear()
    seq.receive("c", at(ahead, 2, prev="1000-1"))
    seq.receive("c", Message("raw"))  # waits its turn
    seq.receive("c", at(ahead, 3, prev=f"{ahead}-2"))
    assert delivered == ["1000-1"]
    history.gate.set()
    await wait_until(lambda: len(delivered) == 4, 5, "the held messages")
    assert delivered == ["1000-1", f"{ahead}-2", "raw", f"{ahead}-3"]
    assert history.reads == 1  # the head read covers every id up to it


async def test_the_head_read_at_a_session_start_is_not_reported_as_delivered() -> None:
    # After a take-over the head is a floor no message has: `seen` (what sse_seen is told
    # this node delivered) must not claim it, yet new channels start after it.
    seq, delivered = sequencer(History(message(1, None)))
    seq.note_head(EventId(1, 7))
    assert seq.seen is None
    seq.started("c")
    seq.receive("c", message(8, 5))  # its prev predates the subscription: no gap
    assert delivered == ["m8"]
    assert seq.seen == EventId(1, 8)


async def test_a_channel_with_no_position_resumes_from_what_was_known_before_the_session() -> None:
    # `c` was subscribed while the link was down (or its SUBSCRIBE was answered by the
    # link's loss): its stream went live then, so 1-2 to 1-4 are its, although the new
    # session's head, read before the hold, is already 1-4.
    history = History(*(message(n, n - 1 if n > 1 else None) for n in range(1, 5)))
    seq, delivered = sequencer(history)
    seq.note_head(EventId(1, 1))  # the first session's head
    assert seq.hold(["c"]) == {"c"}  # the second session
    seq.note_head(EventId(1, 4))
    seq.backfill(["c"])
    await wait_until(lambda: len(delivered) == 3, 5, "the backfill")
    assert delivered == ["m2", "m3", "m4"]


async def test_after_an_empty_head_a_channel_resumes_from_the_sequence_start() -> None:
    # The first session found no sequence: everything published since is new to `c`,
    # and read from before the sequence's first id (its epoch), with no reset.
    history = History(*(message(n, n - 1 if n > 1 else None) for n in range(1, 3)))
    seq, delivered = sequencer(history)
    seq.note_head(None)
    seq.started("c")
    assert seq.hold(["c"]) == {"c"}
    seq.backfill(["c"])
    await wait_until(lambda: len(delivered) == 2, 5, "the backfill")
    assert delivered == ["m1", "m2"]


async def test_a_node_that_never_read_a_head_backfills_no_channel_without_position() -> None:
    seq, _ = sequencer(History(message(1, None)))
    assert seq.hold(["c"]) == set()
    assert not seq.holding


async def test_a_prev_the_history_never_had_is_read_for_once() -> None:
    # 1-3 names a `prev` (1-2) that no read can find: after one backfill it goes out,
    # rather than start another read, and another, for good.
    history = History(message(1, None))
    seq, delivered = sequencer(history)
    seq.receive("c", message(1, None))
    seq.receive("c", message(3, 2))
    await wait_until(lambda: len(delivered) == 2, 5, "the backfill")
    assert delivered == ["m1", "m3"]
    assert history.reads == 1
    assert not seq.holding


async def test_raw_text_does_not_take_the_place_of_a_first_durable_message() -> None:
    seq, delivered = sequencer(History(message(1, None)))
    seq.note_head(EventId(1, 7))
    seq.started("c")
    seq.receive("c", Message("raw"))
    seq.receive("c", message(9, 5))  # its prev predates the subscription: no gap
    assert delivered == ["raw", "m9"]
    assert not seq.holding


class Failing(History):
    """History whose first read fails with an error no one retries (a bug)."""

    def __init__(self, *messages: Message) -> None:
        super().__init__(*messages)
        self.failures = 1

    async def read(self, positions: Mapping[str, str]) -> Snapshot:
        if self.failures:
            self.failures -= 1
            raise KeyError("a bug")
        return await super().read(positions)


async def test_a_backfill_that_raises_starts_over_instead_of_holding_for_good() -> None:
    history = Failing(*(message(n, n - 1 if n > 1 else None) for n in range(1, 5)))
    seq, delivered = sequencer(history)
    seq.receive("c", message(1, None))
    seq.receive("c", message(3, 2))  # 2 is missing: a backfill, whose first read fails
    seq.receive("c", message(4, 3))
    await wait_until(lambda: len(delivered) == 4, 5, "the backfill, started over")
    assert delivered == ["m1", "m2", "m3", "m4"]
    assert not seq.holding


async def test_a_channel_forgotten_during_its_backfill_holds_nothing_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    history = History(*(message(n, n - 1 if n > 1 else None) for n in range(1, 5)))
    seq, delivered = sequencer(history)
    seq.receive("c", message(1, None))
    history.gate.clear()
    seq.receive("c", message(3, 2))  # a backfill of `c` starts, its read waits
    await wait_until(lambda: history.reads == 1, 5, "the backfill's read")
    seq.forget("c")  # its last client left
    history.gate.set()
    await wait_until(lambda: not seq.holding, 5, "the backfill to end")
    seq.receive("d", message(9, None))
    assert delivered[-1] == "m9"
    assert "backfill failed" not in caplog.text


async def test_a_channel_first_joined_during_a_hold_is_backfilled_from_its_replay() -> None:
    # A client's stream subscribed `a` (its first on this node) while `b` was being
    # backfilled; the link went before Redis acknowledged it, and the client's replay
    # read history up to 1-2. After the reconnect `a` must be backfilled from there:
    # taking the new session's head as its position would skip 1-3 to 1-5 for good.
    history = History(*(message(n, n - 1 if n > 1 else None) for n in range(1, 6)))
    seq, delivered = sequencer(history)
    seq.receive("b", message(1, None))
    seq.hold(["b"])
    seq.replayed(["a"], EventId(1, 2), caught_up=False)
    seq.cancel()  # the link went again
    seq.note_head(EventId(1, 5))  # the next session's head
    assert seq.hold(["a", "b"]) == {"a", "b"}
    seq.backfill(["a"])
    await wait_until(lambda: "m5" in delivered, 5, "the backfill of a")
    assert delivered == ["m1", "m3", "m4", "m5"]


async def test_joiners_of_a_new_channel_resume_from_the_lowest_replay_head() -> None:
    history = History(*(message(n, n - 1 if n > 1 else None) for n in range(1, 6)))
    seq, delivered = sequencer(history)
    seq.receive("b", message(1, None))
    seq.hold(["b"])
    seq.replayed(["a"], EventId(1, 4), caught_up=False)  # a later joiner's read first
    seq.replayed(["a"], EventId(1, 2), caught_up=False)
    assert seq.hold(["a", "b"]) == {"a", "b"}
    seq.backfill(["a"])
    await wait_until(lambda: "m5" in delivered, 5, "the backfill of a")
    assert delivered == ["m1", "m3", "m4", "m5"]  # from 1-2: the earlier joiner gets 1-3
