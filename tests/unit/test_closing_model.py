"""Closing channels, checked against a model (hypothesis stateful).

A real `Hub` on a `MemoryBroker` (whose answer to which channels are closed may lag)
takes publishes on three channels, each of which may
close its channel or reopen it, while live streams of one or two channels open (as
`EventStreamResponse.serve` does: a 204 when every channel is closed already), some
with a publish landing between their subscription and the hub learning whether the
channel is closed, and leave. After every step: the broker refused exactly the
publishes to closed channels that did not reopen them; each stream has every event of
its channels since it opened, in order, and has ended, cleanly and after the closing
event, exactly when all its channels are closed; the hub says a stream is finished
exactly then. 200 examples of up to 30 steps in the suite; for longer:
`MODEL_EXAMPLES=3000 MODEL_STEPS=50 .venv/bin/pytest tests/unit/test_closing_model.py`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broadcaster.brokers.memory import MemoryBroker
from broadcaster.brokers.protocol import ChannelClosed
from broadcaster.core.ids import EventId
from broadcaster.core.publication import Publication
from broadcaster.delivery.hub import Hub
from broadcaster.delivery.stream import Stream
from tests.support.fakes import FakeTransport
from tests.support.sse import Parser

CHANNELS = ("a", "b", "c")
channel_sets = st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=2, unique=True)


class LaggingBroker(MemoryBroker):
    """Answers which channels are closed as they were when last subscribed: a read that
    Redis ran before a publish whose live copy reached the node before the read's reply."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, EventId] = {}

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        self._seen.pop(channel, None)
        history = self._history.get(channel)
        if history and history[-1].message.closes:
            self._seen[channel] = history[-1].id
        return super().subscribe(channel)

    async def closed(self, channels: Sequence[str]) -> dict[str, EventId]:
        return {channel: self._seen[channel] for channel in channels if channel in self._seen}


@dataclass
class Client:
    """One stream, and what it must have received."""

    stream: Stream
    transport: FakeTransport
    expected: list[str] = field(default_factory=list)
    ends: bool = False
    """Whether all its channels were closed at some moment since it opened."""

    def received(self) -> list[str]:
        text = b"".join(self.transport.writes).decode()
        return [event.data for event in Parser().feed(text)]


class ClosingModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.broker = LaggingBroker()
        self.hub = Hub(self.broker, heartbeat_interval=3600)
        self.run(self.broker.start(self.hub.deliver))
        self.closed = dict.fromkeys(CHANNELS, False)
        self.clients: list[Client] = []
        self.count = 0

    def run(self, coroutine: object) -> object:
        return self.loop.run_until_complete(coroutine)  # type: ignore[arg-type]

    def settle(self) -> None:
        """Let the outbox flush what this step delivered."""
        for _ in range(3):
            self.run(asyncio.sleep(0))

    async def _publish(
        self, channel: str, close: bool, reopen: bool, joining: Client | None = None
    ) -> None:
        self.count += 1
        data = f"{channel}{self.count}"
        batch = [Publication(channel, data, close=close, reopen=reopen)]
        if self.closed[channel] and not reopen:
            try:
                await self.broker.publish(batch)
            except ChannelClosed:
                return
            raise AssertionError(f"a publish to closed {channel} went through")
        clients = [*self.clients, *([joining] if joining else [])]
        following = [c for c in clients if channel in c.stream.channels and not c.stream.ended]
        await self.broker.publish(batch)
        self.closed[channel] = close
        for client in following:
            client.expected.append(data)
            client.ends = all(self.closed[c] for c in client.stream.channels)

    @rule(channel=st.sampled_from(CHANNELS), close=st.booleans(), reopen=st.booleans())
    def publish(self, channel: str, close: bool, reopen: bool) -> None:
        self.run(self._publish(channel, close, reopen))
        self.settle()

    async def _open(self, channels: list[str], racing: tuple[str, bool, bool] | None) -> None:
        transport = FakeTransport()
        stream = self.hub.open(transport, channels, max_pending_bytes=1 << 20, release=_nothing)
        client = Client(stream, transport)
        join = asyncio.create_task(self.hub.join(stream))
        if racing is not None:
            # Subscribed, not yet told whether its channels are closed: a publish lands.
            await asyncio.sleep(0)
            await self._publish(*racing, joining=client)
        await join
        if self.hub.finished(stream) and not stream.holds_after(None):
            assert all(self.closed[channel] for channel in channels)
            stream.close("closed")  # (the 204)
            stream.connection_lost()
            return
        stream.start(chunked=False)  # (no replay: a live-only stream)
        self.hub.go_live(stream, chunked=False)
        self.clients.append(client)

    @rule(channels=channel_sets)
    def open_stream(self, channels: list[str]) -> None:
        self.run(self._open(channels, None))
        self.settle()

    @rule(
        channels=channel_sets,
        close=st.booleans(),
        reopen=st.booleans(),
    )
    def open_stream_as_one_publishes(self, channels: list[str], close: bool, reopen: bool) -> None:
        self.run(self._open(channels, (channels[0], close, reopen)))
        self.settle()

    @precondition(lambda self: self.clients)
    @rule(pick=st.integers(min_value=0))
    def leave(self, pick: int) -> None:
        client = self.clients.pop(pick % len(self.clients))
        client.transport.close()
        client.stream.connection_lost()
        self.settle()

    @invariant()
    def streams_have_their_events_and_end_exactly_when_all_is_closed(self) -> None:
        for client in self.clients:
            stream = client.stream
            assert client.received() == client.expected
            if client.ends:
                assert stream.reason == "closed" and client.transport.ended == "close"
            else:
                assert not stream.ended and client.transport.ended is None
                all_closed = all(self.closed[channel] for channel in stream.channels)
                assert not self.hub.finished(stream) and not all_closed

    def teardown(self) -> None:
        for client in self.clients:
            client.stream.connection_lost()
        self.run(self.broker.close())
        self.loop.close()


def _nothing() -> None:
    pass


ClosingModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("MODEL_EXAMPLES", "200")),
    stateful_step_count=int(os.environ.get("MODEL_STEPS", "30")),
    deadline=None,
)
TestClosingModel = ClosingModel.TestCase
