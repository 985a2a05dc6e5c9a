"""The Redis broker's protocol handling, against fakeredis (real Redis: tests/integration)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest

from broadcaster.message import ENVELOPE_MARK, Message
from broadcaster.redis import RedisBroker
from tests.support.wait import wait_until
from tests.unit.test_message import envelope

Received = list[tuple[str, Message]]
Setup = tuple[RedisBroker, fakeredis.FakeAsyncRedis, Received]


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeAsyncRedis(server=server)
    probe = fakeredis.FakeAsyncRedis(server=server)
    broker = RedisBroker(client, prefix="p:")
    received: Received = []
    await broker.start(lambda channel, message: received.append((channel, message)))
    assert broker.connected
    yield broker, probe, received
    await broker.close()
    await probe.aclose()


async def numsub(probe: fakeredis.FakeAsyncRedis, channel: str) -> int:
    return int((await probe.pubsub_numsub(channel))[0][1])


async def test_delivers_raw_and_enveloped_messages(
    setup: Setup,
) -> None:
    broker, probe, received = setup
    await broker.subscribe("news")
    await probe.publish("p:news", b"raw text")
    await probe.publish("p:news", envelope("7-3", "5-1", "update", "7", "hi"))
    await wait_until(lambda: len(received) == 2, 5, "two messages")
    assert received == [
        ("news", Message("raw text")),
        ("news", Message("hi", "update", "7-3", "5-1", 7)),
    ]


async def test_a_malformed_envelope_is_dropped_and_delivery_goes_on(
    setup: Setup,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, probe, received = setup
    await broker.subscribe("news")
    await probe.publish("p:news", ENVELOPE_MARK + b"{broken")
    await probe.publish("p:news", b"after")
    await wait_until(lambda: len(received) == 1, 5, "the good message")
    assert received == [("news", Message("after"))]
    assert "dropped a malformed message" in caplog.text
