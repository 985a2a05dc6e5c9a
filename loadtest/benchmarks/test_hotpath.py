"""Micro-benchmarks of the fan-out hot path (pytest-benchmark; figures, no assertions on time).

.venv/bin/pytest loadtest/benchmarks --benchmark-only
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from broadcaster.brokers.memory import MemoryBroker
from broadcaster.core.ids import EventId
from broadcaster.core.message import ENVELOPE_MARK, Message, unpack
from broadcaster.core.sse import encode_event
from broadcaster.delivery.hub import Hub
from broadcaster.delivery.stream import Stream

DATA = "x" * 100
ENVELOPE = b"\n".join(
    [ENVELOPE_MARK, b"1795527732973-42", b"1795527732973-41", b"", b"1795527732973", DATA.encode()]
)


class NullTransport(asyncio.Transport):
    """Accepts writes and drops them: the benchmark measures our code, not the kernel."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def test_encode_one_event(benchmark: BenchmarkFixture) -> None:
    benchmark(encode_event, DATA, None, "1795527732973-42")


def test_unpack_one_envelope(benchmark: BenchmarkFixture) -> None:
    benchmark(unpack, ENVELOPE)


def test_parse_one_id(benchmark: BenchmarkFixture) -> None:
    benchmark(EventId.parse, "1795527732973-42")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.mark.parametrize("per_turn", [1, 10])
@pytest.mark.parametrize("channels", [("c",), ("c", "other")], ids=["sharing", "individual"])
def test_fan_out_to_10k_streams(
    benchmark: BenchmarkFixture,
    loop: asyncio.AbstractEventLoop,
    per_turn: int,
    channels: tuple[str, ...],
) -> None:
    """One loop turn: `per_turn` messages to 10,000 subscribers, coalesced into writes.

    Streams of one channel share one framed write; streams of several take each frame.
    """

    async def setup() -> Hub:
        hub = Hub(MemoryBroker(), heartbeat_interval=3600)
        for _ in range(10_000):
            stream = Stream(NullTransport(), hub.outbox, channels, max_pending_bytes=1 << 20)
            await hub.join(stream)
            hub.go_live(stream, chunked=True)
        return hub

    hub = loop.run_until_complete(setup())
    message = Message(DATA, None, "1795527732973-42")

    async def one_turn() -> None:
        for _ in range(per_turn):
            hub.deliver("c", message)
        hub.outbox.flush()

    benchmark(lambda: loop.run_until_complete(one_turn()))
