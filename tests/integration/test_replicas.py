"""PUBLISH_REPLICAS: a publish is acknowledged once N replicas hold it (WAIT); one they do
not confirm in time answers 503, and its retry under the same key publishes once."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest

from broadcaster import RedisPublisher
from broadcaster.brokers.config import LibraryConfig
from broadcaster.brokers.redis.client import connect
from broadcaster.brokers.redis.library import Library, NotReplicated
from broadcaster.core.publication import Publication
from tests.support.metrics import metric
from tests.support.nodes import StartApp
from tests.support.processes import RedisServer, caught_up, replicas_online
from tests.support.publish import post
from tests.support.wait import wait_until


def blocked(primary: RedisServer) -> bool:
    return "blocked_clients:0" not in primary.cli("INFO", "clients")


async def test_acknowledged_means_held_by_the_replicas(
    redis_pair: tuple[RedisServer, RedisServer], start_app: StartApp, session: aiohttp.ClientSession
) -> None:
    primary, replica = redis_pair
    await wait_until(lambda: replicas_online(primary), 10, "the replica")
    base = await start_app(
        redis_url=primary.url, publish_token="t", publish_replicas=1, publish_replica_timeout=1
    )
    status, text = await post(session, base, {"channel": "r", "data": "held"}, key="k1")
    assert status == 200, text
    # The moment it is acknowledged, the replica has it.
    assert "held" in replica.cli("XRANGE", "sse:history:r", "-", "+")

    assert replica.process is not None
    os.kill(replica.process.pid, signal.SIGSTOP)  # a replica that stops answering
    try:
        status, text = await post(session, base, {"channel": "r", "data": "unconfirmed"}, key="k2")
        assert status == 503
        assert text == (
            "0 of 1 replicas confirmed within 1 s: the message may or may not be delivered; "
            "retry with the same idempotency key\n"
        )
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    await wait_until(lambda: replicas_online(primary), 10, "the replica again")
    # The retry:
    status, _ = await post(session, base, {"channel": "r", "data": "unconfirmed"}, key="k2")
    assert status == 200
    entries = primary.cli("XRANGE", "sse:history:r", "-", "+")
    assert entries.count("unconfirmed") == 1, "published once"

    stricter = await start_app(
        redis_url=primary.url, publish_token="t", publish_replicas=2, publish_replica_timeout=0.2
    )
    status, text = await post(session, stricter, {"channel": "r", "data": "needs two"}, key="k3")
    assert status == 503 and text.startswith("1 of 2 replicas confirmed within 0.2 s")
    refused = 'broadcaster_publish_errors_total{reason="not_replicated"}'
    assert await metric(session, stricter, refused) == 1  # the alert's series
    assert await metric(session, base, refused) == 1


async def test_python_publishers_retry_until_the_replicas_confirm(
    redis_pair: tuple[RedisServer, RedisServer],
) -> None:
    primary, replica = redis_pair
    await wait_until(lambda: replicas_online(primary), 10, "the replica")
    assert replica.process is not None
    async with RedisPublisher.from_url(
        primary.url, config=LibraryConfig(replicas=1, replica_timeout=0.5), retries=10
    ) as publisher:
        os.kill(replica.process.pid, signal.SIGSTOP)
        publishing = asyncio.create_task(publisher.publish("py", "once"))
        await wait_until(lambda: blocked(primary), 10, "the publish to wait for the replica")
        os.kill(replica.process.pid, signal.SIGCONT)
        sent = await publishing
    entries = primary.cli("XRANGE", "sse:history:py", "-", "+")
    assert entries.count("once") == 1 and sent in entries


async def test_a_repeat_on_a_new_connection_is_acknowledged_only_once_replicated(
    redis_pair: tuple[RedisServer, RedisServer],
) -> None:
    # A repeated key publishes nothing new, and WAIT counts replicas past the connection's
    # own last write: on a connection whose first command is the retry, there is none
    # (whatever a server then assumes). The repeat writes its key again, unchanged, so its
    # WAIT covers the original publish, which came before it.
    primary, replica = redis_pair
    await wait_until(lambda: replicas_online(primary), 10, "the replica")
    assert replica.process is not None
    library = Library(LibraryConfig(replicas=1, replica_timeout=0.3))
    batch = [Publication.of("w", "once", None, "key-1")]
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        for attempt in ("the original", "the retry, on a connection of its own"):
            client = connect(primary.url)
            try:
                with pytest.raises(NotReplicated):
                    await library.publish(client, batch)
            finally:
                await client.aclose()
            assert primary.cli("XLEN", "sse:history:w").strip() == "1", attempt
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    await wait_until(lambda: caught_up(primary, replica), 10, "the replica to catch up")
    patient = Library(LibraryConfig(replicas=1, replica_timeout=5))  # (acks come each second)
    client = connect(primary.url)
    try:
        [again] = await patient.publish(client, batch)  # replicated now: acknowledged
    finally:
        await client.aclose()
    assert again in replica.cli("XRANGE", "sse:history:w", "-", "+")


async def test_a_primary_without_replicas_in_reach_refuses_publishes_as_retryable(
    redis_server: RedisServer, start_app: StartApp, session: aiohttp.ClientSession
) -> None:
    # `min-replicas-to-write` with no replica: Redis answers NOREPLICAS, which the node
    # says with 503 and its reason, and the Python publishers retry.
    redis_server.cli("CONFIG", "SET", "min-replicas-to-write", "1")
    base = await start_app(redis_url=redis_server.url, publish_token="t")
    status, text = await post(session, base, {"channel": "r", "data": "refused"})
    assert status == 503 and "NOREPLICAS" in text and "nothing was published" in text, text
    client = connect(redis_server.url)
    try:
        with pytest.raises(NotReplicated, match="NOREPLICAS"):
            await Library(LibraryConfig()).publish(client, [Publication.of("r", "refused")])
        assert issubclass(NotReplicated, RedisPublisher.retryable)
    finally:
        await client.aclose()
    assert redis_server.cli("EXISTS", "sse:history:r").strip() == "0"
