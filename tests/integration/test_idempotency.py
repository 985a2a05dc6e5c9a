"""Idempotent publish on both brokers: a repeated key on a channel, within the window,
answers the first id and publishes nothing, even when the repeat races the original."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest
import redis.asyncio as redis

from broadcaster import SyncHttpPublisher, SyncPublisher, SyncRedisPublisher
from broadcaster.brokers.redis.library import BATCH_CALL, Library
from broadcaster.client.retries import Retries
from broadcaster.core.publication import Publication
from tests.support.client import subscribe
from tests.support.nodes import StartApp, StartNode
from tests.support.processes import RedisServer
from tests.support.publish import post
from tests.support.wait import eventually

Node = tuple[aiohttp.ClientSession, str]


@pytest.fixture
async def node(start_broker_app: StartApp, session: aiohttp.ClientSession) -> Node:
    """A node on each broker in turn."""
    return session, await start_broker_app(idempotency_window=1)


async def retained(node: Node, channel: str, count: int) -> list[str]:
    """The ids a late joiner gets: everything retained on `channel` (expects `count`)."""
    session, base = node
    async with subscribe(session, base, [channel], query={"lastEventId": "earliest"}) as sub:
        marker = await post(*node, {"channel": channel, "data": "end"})
        events = await sub.wait_for(count + 1)
        assert events[-1].id == marker[1]["id"]
        return [event.data for event in events[:-1]]


async def test_the_header_makes_a_publish_idempotent(node: Node) -> None:
    body = {"channel": "pay", "data": "paid"}
    status, first = await post(*node, body, key="order-1")
    assert status == 200
    assert await post(*node, body, key="order-1") == (200, first)
    assert await post(*node, body, key='"order-1"') == (200, first), "a quoted key is the same"
    assert await post(*node, {"channel": "pay", "data": "paid", "idempotency_key": "order-1"}) == (
        200,
        first,
    )
    assert await retained(node, "pay", 1) == ["paid"]


async def test_repeats_racing_the_original_publish_once(node: Node) -> None:
    body = {"channel": "race", "data": "once"}
    answers = await asyncio.gather(*(post(*node, body, key="same") for _ in range(20)))
    assert {status for status, _ in answers} == {200}
    assert len({answer["id"] for _, answer in answers}) == 1
    assert await retained(node, "race", 1) == ["once"]


async def test_an_array_is_keyed_per_message(node: Node) -> None:
    batch = [{"channel": "arr", "data": "a"}, {"channel": "arr", "data": "b"}]
    status, ids = await post(*node, batch, key="batch-9")
    assert status == 200 and len(ids) == 2
    assert await post(*node, batch, key="batch-9") == (200, ids)
    status, longer = await post(*node, [*batch, {"channel": "arr", "data": "c"}], key="batch-9")
    assert status == 200 and longer[:2] == ids and longer[2] not in ids
    assert await retained(node, "arr", 3) == ["a", "b", "c"]


async def test_a_key_counts_only_within_the_window(node: Node) -> None:
    body = {"channel": "win", "data": "x"}
    _, first = await post(*node, body, key="k")

    async def forgotten() -> bool:
        return bool((await post(*node, body, key="k"))[1] != first)

    await eventually(forgotten, 10, "the 1 s window to pass")


@pytest.mark.parametrize(
    ("key", "reason"),
    [("has space", "idempotency key must be 1 to 255"), ("x" * 300, "idempotency key")],
)
async def test_a_bad_key_gets_400(node: Node, key: str, reason: str) -> None:
    status, text = await post(*node, {"channel": "c", "data": "x"}, key=key)
    assert status == 400 and reason in text and text.count("\n") == 1


async def test_fcall_takes_a_key_after_the_event(
    redis_server: RedisServer, start_node: StartNode
) -> None:
    start_node(redis_server.url)  # loads the function
    first = redis_server.cli("FCALL", "sse_publish", "1", "f", "data", "", "k1").strip()
    again = redis_server.cli("FCALL", "sse_publish", "1", "f", "other", "", "k1").strip()
    typed = redis_server.cli("FCALL", "sse_publish", "1", "f", "data", "note", "k2").strip()
    assert again == first and typed != first
    assert redis_server.cli("XLEN", "sse:history:f").strip() == "2"
    refused = redis_server.cli("FCALL", "sse_publish", "1", "f", "data", "", "bad key")
    assert "idempotency key must be" in refused
    async with redis.Redis.from_url(redis_server.url) as client:
        # Two calls with one key in one pipeline: the second races the first and loses.
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(2):
                pipe.fcall("sse_publish", 1, "f", "racing", "", "k3")
            racing = await pipe.execute()
        assert racing[0] == racing[1]
        assert await client.xlen("sse:history:f") == 3


def publish_from_threads(publisher: SyncPublisher, threads: int) -> list[str]:
    """Every thread publishes 5 messages in one batch through the one shared publisher."""
    ids: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        sent = publisher.publish_many([(f"threads-{n % 4}", f"m{n}-{k}") for k in range(5)])
        with lock:
            ids.extend(sent)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return ids


def test_sync_publishers_share_across_threads(
    redis_server: RedisServer, start_node: StartNode
) -> None:
    node = start_node(redis_server.url, publish_token="t")
    for publisher in (
        SyncRedisPublisher.from_url(redis_server.url),
        SyncHttpPublisher(node.url, "t"),
    ):
        with publisher:
            assert len(set(publish_from_threads(publisher, 16))) == 80


async def test_sync_publishers_from_an_event_loops_thread_pool(
    redis_server: RedisServer, start_node: StartNode
) -> None:
    node = start_node(redis_server.url, publish_token="t")
    loop = asyncio.get_running_loop()
    with (
        ThreadPoolExecutor(4) as pool,
        SyncRedisPublisher.from_url(redis_server.url) as via_redis,
        SyncHttpPublisher(node.url, "t") as via_http,
    ):
        jobs = [
            loop.run_in_executor(pool, publisher.publish, "pool", f"m{n}")
            for n in range(20)
            for publisher in (via_redis, via_http)
        ]
        ids = await asyncio.gather(*jobs)
        streamed = await loop.run_in_executor(
            pool, via_http.stream, "pool-stream", [f"t{n}" for n in range(30)]
        )
    assert len(set(ids)) == 40 and len(streamed) == 31
    async with redis.Redis.from_url(redis_server.url) as client:
        assert await client.xlen("sse:history:pool") == 40


async def test_a_retried_batch_of_retry_keys_publishes_each_call_once(
    redis_server: RedisServer,
) -> None:
    # A publisher's own keys travel as one key per batch call: its retry of a batch whose
    # first call went through answers that call's ids and publishes the rest once.
    batch = Retries(3).keyed([Publication(f"r{n % 3}", f"m{n}") for n in range(450)])
    library = Library()
    async with redis.Redis.from_url(redis_server.url) as client:
        await library.load(client, replace=True)
        applied = await library.publish(client, batch[:BATCH_CALL])
        again = await library.publish(client, batch)
        assert again[:BATCH_CALL] == applied and len(set(again)) == len(batch)
        stored = sum([await client.xlen(f"sse:history:r{n}") for n in range(3)])
        assert stored == len(batch)
        assert await client.keys("sse:idem:*") == [], "no key per message"
