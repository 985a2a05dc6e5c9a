"""The local hub: refcounted subscriptions in call order, and encode-once fan-out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from broadcaster.brokers.memory import MemoryBroker
from broadcaster.core.history import Start
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.publication import Publication
from broadcaster.core.replay import Replay
from broadcaster.delivery.hub import Hub
from broadcaster.delivery.outbox import Outbox
from broadcaster.delivery.stream import Stream
from tests.support.fakes import FakeTransport
from tests.support.wait import wait_until


class RecordingBroker:
    """A broker whose subscriptions resolve only when the test says so."""

    connected = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.pending: list[asyncio.Future[None]] = []

    async def start(self, deliver: object) -> None: ...

    async def close(self) -> None: ...

    def group(self, channel: str) -> str:
        return ""

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        self.calls.append(("subscribe", channel))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(done)
        return done

    def unsubscribe(self, channel: str) -> None:
        self.calls.append(("unsubscribe", channel))

    async def publish(self, batch: Sequence[Publication]) -> list[str]:
        return [f"1-{n}" for n, _ in enumerate(batch, 1)]

    async def closed(self, channels: Sequence[str]) -> dict[str, EventId]:
        return {}

    async def replay(self, channels: Sequence[str], start: Start) -> Replay:
        return Replay(None)

    def confirm(self) -> None:
        for done in self.pending:
            if not done.done():
                done.set_result(None)


def new_stream(*channels: str) -> tuple[Stream, FakeTransport]:
    transport = FakeTransport()
    stream = Stream(transport, Outbox(), channels, max_pending_bytes=1 << 20)
    stream.start(chunked=False)
    return stream, transport


async def test_first_subscriber_subscribes_and_last_unsubscribes() -> None:
    broker = RecordingBroker()
    hub = Hub(broker, heartbeat_interval=15)
    (a, _), (b, _) = new_stream("c"), new_stream("c", "d")
    joins = [asyncio.create_task(hub.join(a)), asyncio.create_task(hub.join(b))]
    await asyncio.sleep(0)
    assert broker.calls == [("subscribe", "c"), ("subscribe", "d")]
    assert not any(join.done() for join in joins)
    broker.confirm()
    await asyncio.gather(*joins)
    hub.leave(a)
    assert broker.calls[-1] == ("subscribe", "d")
    hub.leave(b)
    assert broker.calls[2:] == [("unsubscribe", "c"), ("unsubscribe", "d")]
    assert hub.channel_count == 0


async def test_a_cancelled_joiner_does_not_cancel_the_shared_subscription() -> None:
    broker = RecordingBroker()
    hub = Hub(broker, heartbeat_interval=15)
    (a, _), (b, _) = new_stream("c"), new_stream("c")
    first = asyncio.create_task(hub.join(a))
    second = asyncio.create_task(hub.join(b))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    hub.leave(a)
    broker.confirm()
    await second
    assert broker.calls == [("subscribe", "c")]


async def test_join_leave_storms_end_in_the_right_state() -> None:
    broker = RecordingBroker()
    hub = Hub(broker, heartbeat_interval=15)
    for round_ in range(50):
        streams = [new_stream("c")[0] for _ in range(round_ % 4 + 1)]
        joins = [asyncio.create_task(hub.join(stream)) for stream in streams]
        await asyncio.sleep(0)
        for stream in streams[: round_ % 3]:
            hub.leave(stream)
        broker.confirm()
        await asyncio.gather(*joins)
        for stream in streams:
            hub.leave(stream)
    # Every 0 -> 1 change subscribed and every 1 -> 0 change unsubscribed, in order.
    verbs = [verb for verb, _ in broker.calls]
    assert verbs == ["subscribe", "unsubscribe"] * 50
    assert hub.channel_count == 0 and hub.stream_count == 0


async def test_a_message_is_encoded_once_for_every_subscriber() -> None:
    hub = Hub(MemoryBroker(), heartbeat_interval=15)
    pairs = [new_stream("c") for _ in range(3)]
    for stream, _ in pairs:
        await hub.join(stream)
    hub.deliver("c", Message("hi", "note"))
    hub.deliver("elsewhere", Message("nobody"))
    await asyncio.sleep(0)
    writes = [transport.writes for _, transport in pairs]
    assert writes[0] == [b"event: note\ndata: hi\n\n"]
    # The very same bytes object went to every socket: encoded once.
    assert writes[0][0] is writes[1][0] is writes[2][0]


async def test_silent_streams_get_heartbeats_from_one_timer() -> None:
    hub = Hub(MemoryBroker(), heartbeat_interval=0.05)
    stream, transport = new_stream("c")
    await hub.join(stream)
    hub.start()
    try:
        await wait_until(lambda: len(transport.writes) >= 2, 5, "two heartbeats")
    finally:
        await hub.stop()
    assert transport.writes[:2] == [b":\n\n", b":\n\n"]


async def live(hub: Hub, *channels: str, chunked: bool = False) -> tuple[Stream, FakeTransport]:
    """A stream joined and handed to the hub, as a response does it."""
    transport = FakeTransport()
    stream = Stream(transport, hub.outbox, channels, max_pending_bytes=1 << 20)
    await hub.join(stream)
    hub.go_live(stream, chunked=chunked)
    return stream, transport


async def test_one_channel_streams_share_one_framed_write_per_turn() -> None:
    hub = Hub(MemoryBroker(), heartbeat_interval=15)
    pairs = [await live(hub, "c", chunked=True) for _ in range(3)]
    hub.deliver("c", Message("1", None, "5-1"))
    hub.deliver("c", Message("2", None, "5-2"))
    await asyncio.sleep(0)
    body = b"id: 5-1\ndata: 1\n\nid: 5-2\ndata: 2\n\n"
    assert pairs[0][1].writes == [b"%x\r\n%b\r\n" % (len(body), body)]
    assert pairs[0][1].writes[0] is pairs[1][1].writes[0] is pairs[2][1].writes[0]
    assert hub.outbox.counts.events_sent == 6


async def test_streams_of_several_channels_get_every_frame_in_delivery_order() -> None:
    hub = Hub(MemoryBroker(), heartbeat_interval=15)
    (_, both), (_, one) = await live(hub, "a", "b"), await live(hub, "a")
    for id_, channel in (("5-1", "a"), ("5-2", "b"), ("5-3", "a")):
        hub.deliver(channel, Message(channel, None, id_))
    await asyncio.sleep(0)
    assert both.writes == [b"id: 5-1\ndata: a\n\nid: 5-2\ndata: b\n\nid: 5-3\ndata: a\n\n"]
    assert one.writes == [b"id: 5-1\ndata: a\n\nid: 5-3\ndata: a\n\n"]


async def test_a_stream_going_live_mid_turn_gets_no_frame_twice() -> None:
    hub = Hub(MemoryBroker(), heartbeat_interval=15)
    _, early = await live(hub, "c")
    late_transport = FakeTransport()
    late = Stream(late_transport, hub.outbox, ["c"], max_pending_bytes=1 << 20)
    await hub.join(late)
    hub.deliver("c", Message("1", None, "5-1"))  # shared for `early`, held for `late`
    hub.go_live(late, chunked=False)
    hub.deliver("c", Message("2", None, "5-2"))
    await asyncio.sleep(0)
    await wait_until(lambda: len(early.writes) == 1, 5, "the first flush")
    hub.deliver("c", Message("3", None, "5-3"))  # next turn: `late` shares too
    await wait_until(lambda: len(early.writes) == 2, 5, "the second flush")
    assert b"".join(late_transport.writes) == b"".join(early.writes)
    assert late_transport.writes[-1] is early.writes[-1]


async def test_retired_streams_get_what_was_delivered_before_their_retry() -> None:
    hub = Hub(MemoryBroker(), heartbeat_interval=15)
    stream, transport = await live(hub, "c")
    hub.deliver("c", Message("last", None, "5-1"))
    hub.close_all("shutdown")
    assert stream.reason == "shutdown"
    assert transport.writes[0] == b"id: 5-1\ndata: last\n\n"
    assert transport.writes[1].startswith(b"retry: ")
    assert transport.ended == "close"


async def test_a_slow_sharing_stream_is_cut_off_and_the_others_go_on() -> None:
    hub = Hub(MemoryBroker(), heartbeat_interval=15)
    (slow, slow_transport), (fine, fine_transport) = await live(hub, "c"), await live(hub, "c")
    slow_transport.backlog = 1 << 21
    hub.deliver("c", Message("x"))
    await wait_until(lambda: slow.ended, 5, "the cut-off")
    assert slow.reason == "slow" and slow_transport.ended == "abort"
    hub.deliver("c", Message("y"))
    await wait_until(lambda: len(fine_transport.writes) == 2, 5, "the next flush")
    assert slow_transport.writes == [b"data: x\n\n"]
    assert fine_transport.writes == [b"data: x\n\n", b"data: y\n\n"]
    assert not fine.ended


async def test_after_a_replay_not_caught_up_a_stream_drops_what_it_replayed() -> None:
    # Its replay went up to 5-2 while the link was down: the link's backfill delivers
    # 5-1 and 5-2 again for the node's other streams; this one must not get them twice.
    hub = Hub(MemoryBroker(), heartbeat_interval=15)
    transport = FakeTransport()
    stream = Stream(transport, hub.outbox, ["c"], max_pending_bytes=1 << 20)
    await hub.join(stream)
    hub.go_live(stream, chunked=False, replayed_through=EventId(5, 2), caught_up=False)
    for id_ in ("5-1", "5-2", "5-3"):
        hub.deliver("c", Message(id_, None, id_))
    await wait_until(lambda: len(transport.writes) == 1, 5, "the flush")
    assert transport.writes == [b"id: 5-3\ndata: 5-3\n\n"]
    hub.deliver("c", Message("5-4", None, "5-4"))
    await wait_until(lambda: len(transport.writes) == 2, 5, "the next flush")
    assert transport.writes[1] == b"id: 5-4\ndata: 5-4\n\n"


async def test_a_stream_lets_go_of_its_slot_and_the_hub_once_its_connection_is_gone() -> None:
    broker = RecordingBroker()
    hub = Hub(broker, heartbeat_interval=15)
    released: list[Stream] = []
    transport = FakeTransport()
    stream = hub.open(
        transport, ["c"], max_pending_bytes=1 << 20, release=lambda: released.append(stream)
    )
    joined = asyncio.create_task(hub.join(stream))
    await wait_until(lambda: bool(broker.pending))
    broker.confirm()
    await joined
    hub.go_live(stream, chunked=False)
    stream.close("max_age")  # the body ends; the connection may still be draining
    assert (hub.stream_count, released, transport.ended) == (1, [], "close")
    stream.connection_lost(None)
    stream.connection_lost(None)  # (however often it is told)
    assert (hub.stream_count, released, stream.reason) == (0, [stream], "max_age")
    assert broker.calls == [("subscribe", "c"), ("unsubscribe", "c")]


async def test_a_first_joiner_that_leaves_mid_read_hands_the_read_on() -> None:
    # Whether a channel is closed is read once, by its first joiner: one cancelled then
    # (its client left) must not leave the others without the answer.
    broker = RecordingBroker()
    answer: asyncio.Future[dict[str, EventId]] = asyncio.get_running_loop().create_future()

    reads: list[Sequence[str]] = []

    async def closed(channels: Sequence[str]) -> dict[str, EventId]:
        reads.append(channels)
        return await asyncio.shield(answer)

    broker.closed = closed  # type: ignore[method-assign]
    hub = Hub(broker, heartbeat_interval=15)
    (first, _), (second, _) = new_stream("c"), new_stream("c")
    leaving = asyncio.create_task(hub.join(first))
    staying = asyncio.create_task(hub.join(second))
    await wait_until(lambda: bool(broker.pending), 5, "the subscription")
    broker.confirm()
    await wait_until(lambda: bool(reads), 5, "the read")
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    hub.leave(first)
    assert not staying.done()
    answer.set_result({"c": EventId(1, 1)})
    await asyncio.wait_for(staying, 5)
    assert hub.finished(second)
    await hub.stop()
