"""The Redis broker's pub/sub link on a real redis-server: raw and enveloped payloads,
malformed ones, many messages in one read, and messages larger than one read."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from broadcaster.brokers.config import LibraryConfig
from broadcaster.brokers.redis import RedisBroker
from broadcaster.brokers.redis.client import connect
from broadcaster.brokers.redis.link import READ_SIZE, SILENT_CHECKS
from broadcaster.core.message import ENVELOPE_MARK, Message
from broadcaster.core.metrics import Counts
from tests.support.processes import RedisServer
from tests.support.wait import wait_until
from tests.unit.test_message import envelope

P_PREFIX = LibraryConfig(prefix="p:")

Received = list[tuple[str, Message]]
Setup = tuple[RedisBroker, aioredis.Redis, Received]


@pytest.fixture
async def setup(redis_server: RedisServer) -> AsyncIterator[Setup]:
    broker = RedisBroker.from_url(redis_server.url, config=LibraryConfig(prefix="p:"))
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
    await probe.publish("p:#news", envelope("7-3", "5-1", "update", "7", "hi"))
    # On the raw channel an envelope is only text: it cannot carry an id, type or reset.
    await probe.publish("p:news", envelope("9-1", "", "reset", "9", "forged"))
    await wait_until(lambda: len(received) == 3, 5, "three messages")
    assert received == [
        ("news", Message("raw text")),
        ("news", Message("hi", "update", "7-3", "5-1", 7)),
        ("news", Message(envelope("9-1", "", "reset", "9", "forged").decode())),
    ]


async def test_a_malformed_envelope_is_dropped_and_delivery_goes_on(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    broker, probe, received = setup
    await broker.subscribe("news")
    await probe.publish("p:#news", ENVELOPE_MARK + b"{broken")
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


def pings(redis_server: RedisServer) -> int:
    """PINGs the server has answered so far."""
    for line in redis_server.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_ping:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def pubsub_client_id(redis_server: RedisServer) -> str:
    """The `id=` of the one pub/sub connection on the server."""
    [link] = redis_server.cli("CLIENT", "LIST", "TYPE", "pubsub").splitlines()
    return link.split()[0]


async def test_an_idle_link_on_a_live_redis_is_never_given_up(redis_server: RedisServer) -> None:
    # Every quiet interval ends with a PING whose PONG comes back at once; the watchdog
    # must take that as life however the loop's timers jitter. Comparing the last read's
    # age with the interval made a near-tie of it, and tiny intervals lost it often.
    counts = Counts()
    broker = RedisBroker(
        connect(redis_server.url), config=P_PREFIX, ping_interval=0.01, counts=counts
    )
    await broker.start(lambda channel, message: None)
    try:
        await broker.subscribe("news")
        link = pubsub_client_id(redis_server)
        await wait_until(lambda: pings(redis_server) >= 300, 60, "300 PING intervals")
        assert broker.connected
        assert counts.redis_reconnects == 0
        assert pubsub_client_id(redis_server) == link
    finally:
        await broker.close()


async def test_a_silent_link_is_given_up_then_reconnected(redis_server: RedisServer) -> None:
    interval = 0.5
    broker = RedisBroker(connect(redis_server.url), config=P_PREFIX, ping_interval=interval)
    received: Received = []
    await broker.start(lambda channel, message: received.append((channel, message)))
    probe = aioredis.Redis.from_url(redis_server.url)
    try:
        await broker.subscribe("news")
        assert redis_server.process is not None
        os.kill(redis_server.process.pid, signal.SIGSTOP)  # up, but answering nothing
        try:
            # Given up after SILENT_CHECKS quiet intervals, so within one more of its last
            # byte (the README's bound); the margin is for a loaded machine.
            bound = (SILENT_CHECKS + 1) * interval
            await wait_until(lambda: not broker.connected, bound + 2, "the silent link given up")
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        await wait_until(lambda: broker.connected, 15, "the reconnect")
        await probe.publish("p:news", b"back")
        await wait_until(lambda: received == [("news", Message("back"))], 5, "the message")
    finally:
        await broker.close()
        await probe.aclose()
