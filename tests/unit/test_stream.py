"""Per-connection writes: buffered until start, coalesced per loop turn, cut off when slow."""

from __future__ import annotations

import asyncio

from broadcaster.core.ids import EventId
from broadcaster.delivery.outbox import Outbox
from broadcaster.delivery.stream import Stream
from tests.support.fakes import FakeTransport
from tests.support.wait import wait_until


async def make_stream(max_pending: int = 1000) -> tuple[Stream, FakeTransport]:
    transport = FakeTransport()
    outbox = Outbox()
    return Stream(transport, outbox, ["c"], max_pending_bytes=max_pending), transport


async def turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_frames_wait_for_start_then_go_out_together() -> None:
    stream, transport = await make_stream()
    stream.push(b"a")
    await turn()
    assert transport.writes == []
    stream.start(chunked=False)
    stream.push(b"b")
    await turn()
    assert transport.writes == [b"ab"]


async def test_ids_on_a_stream_only_grow() -> None:
    # A message older than one the stream has (before start, or live) predates its
    # channel's subscription or was in its replay: it is dropped. Frames without id pass.
    stream, transport = await make_stream()
    stream.push(b"3 ", EventId(5, 3))
    stream.push(b"2 ", EventId(5, 2))
    stream.start(chunked=False, replayed_through=EventId(5, 1))
    stream.push(b"3 ", EventId(5, 3))
    stream.push(b"reset ")
    stream.push(b"4", EventId(5, 4))
    await turn()
    assert transport.writes == [b"3 reset 4"]


async def test_one_chunked_write_per_loop_turn() -> None:
    stream, transport = await make_stream()
    stream.start(chunked=True)
    for frame in (b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"):
        stream.push(frame)
    await turn()
    body = b"data: 1\n\ndata: 2\n\ndata: 3\n\n"
    assert transport.writes == [b"%x\r\n%b\r\n" % (len(body), body)]


async def test_a_backed_up_client_is_cut_off_as_slow() -> None:
    stream, transport = await make_stream(max_pending=10)
    stream.start(chunked=False)
    transport.backlog = 11
    stream.push(b"x")
    await turn()
    assert stream.reason == "slow"
    assert transport.ended == "abort"
    stream.push(b"y")
    await turn()
    assert transport.writes == [b"x"]


async def test_a_gone_client_is_noticed_on_the_next_write() -> None:
    stream, transport = await make_stream()
    stream.start(chunked=False)
    transport.closing = True
    stream.push(b"x")
    await turn()
    assert stream.reason == "gone"
    assert transport.writes == []


async def test_a_clean_close_flushes_what_is_queued_then_ends_the_body() -> None:
    stream, transport = await make_stream()
    stream.start(chunked=True)
    stream.push(b"last")
    stream.close("shutdown")
    assert transport.writes == [b"4\r\nlast\r\n", b"0\r\n\r\n"]
    assert transport.ended == "close"
    assert stream.reason == "shutdown"
    stream.close("slow")
    assert stream.reason == "shutdown"


async def test_a_stream_ended_before_it_starts_leaves_its_connection_alone() -> None:
    stream, transport = await make_stream()
    stream.push(b"held")
    stream.close("shutdown")
    assert stream.ended and stream.reason == "shutdown"
    assert transport.writes == [] and transport.ended is None


async def test_after_a_slow_flush_events_of_later_turns_share_one_write() -> None:
    now = [0.0]  # the outbox's clock: each write costs a second of it, and no real time

    class SlowTransport(FakeTransport):
        def write(self, data: bytes | bytearray | memoryview) -> None:
            now[0] += 1.0  # a flush this costly means the node is overloaded
            super().write(data)

    transport = SlowTransport()
    stream = Stream(transport, Outbox(clock=lambda: now[0]), ["c"], max_pending_bytes=1000)
    stream.start(chunked=False)
    stream.push(b"1")
    await turn()
    assert transport.writes == [b"1"]
    stream.push(b"2")
    await turn()  # the next flush waits (MAX_FLUSH_DEFER: the last one took so long)...
    stream.push(b"3")
    await wait_until(lambda: len(transport.writes) == 2, 2, "the deferred flush")
    assert transport.writes == [b"1", b"23"]  # ...so these two share one write


async def test_a_client_slow_to_read_its_replay_is_cut_off_like_a_live_one() -> None:
    # While the preamble goes out, live frames wait in the stream: they, with what the
    # socket has not sent, count against the same bound as a live stream's backlog.
    transport, outbox = FakeTransport(), Outbox()
    stream = Stream(transport, outbox, ["c"], max_pending_bytes=1000)
    transport.backlog = 600  # the replay, still unread
    stream.push(b"x" * 300)
    assert not stream.ended
    stream.push(b"x" * 300)
    assert (stream.reason, transport.ended) == ("slow", "abort")
    assert outbox.counts.slow_disconnects == 1
