"""The Redis broker's pub/sub link on a real redis-server: raw and enveloped payloads,
malformed ones, many messages in one read, and messages larger than one read."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from broadcaster.message import ENVELOPE_MARK, Message
from broadcaster.redis import RedisBroker
from broadcaster.redis.client import connect
from broadcaster.redis.link import READ_SIZE
from tests.support.processes import RedisServer
from tests.support.wait import wait_until
from tests.unit.test_message import envelope

Received = list[tuple[str, Message]]
Setup = tuple[RedisBroker, aioredis.Redis, Received]


@pytest.fixture
async def setup(redis_server: RedisServer) -> AsyncIterator[Setup]:
    broker = RedisBroker.from_url(redis_server.url, prefix="p:")
    probe = aioredis.Redis.from_url(redis_server.url)
    received: Received = []
    await broker.start(lambda channel, message: received.append((channel, message)))
    assert broker.connected
    yield broker, probe, received
    await broker.close()
    await probe.aclose()


async def test_delivers_raw_and_enveloped_messages(setup: Setup) -> None:
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
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    broker, probe, received = setup
    await broker.subscribe("news")
    await probe.publish("p:news", ENVELOPE_MARK + b"{broken")
    await probe.publish("p:news", b"after")
    await wait_until(lambda: len(received) == 1, 5, "the good message")
    assert received == [("news", Message("after"))]
    assert "dropped a malformed message" in caplog.text


async def test_many_messages_in_one_read_and_one_message_over_many_reads(setup: Setup) -> None:
    broker, probe, received = setup
    await broker.subscribe("a")
    await broker.subscribe("b")
    big = "x" * (3 * READ_SIZE + 7)
    async with probe.pipeline(transaction=False) as pipe:  # one burst: many per read
        for n in range(2000):
            pipe.publish("p:a" if n % 2 else "p:b", str(n))
        pipe.publish("p:a", big)
        pipe.publish("p:b", "last")
        await pipe.execute()
    await wait_until(lambda: len(received) == 2002, 10, "every message")
    assert [m.data for _, m in received[:2000]] == [str(n) for n in range(2000)]
    assert [c for c, _ in received[:4]] == ["b", "a", "b", "a"]
    assert received[2000] == ("a", Message(big))
    assert received[2001] == ("b", Message("last"))


async def test_a_silent_link_is_given_up_then_reconnected(redis_server: RedisServer) -> None:
    broker = RedisBroker(connect(redis_server.url), prefix="p:", ping_interval=0.2)
    received: Received = []
    await broker.start(lambda channel, message: received.append((channel, message)))
    probe = aioredis.Redis.from_url(redis_server.url)
    try:
        await broker.subscribe("news")
        assert redis_server.process is not None
        os.kill(redis_server.process.pid, signal.SIGSTOP)  # up, but answering nothing
        try:
            await wait_until(lambda: not broker.connected, 10, "the silent link given up")
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        await wait_until(lambda: broker.connected, 15, "the reconnect")
        await probe.publish("p:news", b"back")
        await wait_until(lambda: received == [("news", Message("back"))], 5, "the message")
    finally:
        await broker.close()
        await probe.aclose()
