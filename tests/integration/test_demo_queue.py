"""The demo's Redis queue on a real redis-server: bounded, expiring, and a producer that
answers only fresh questions on demo channels."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import orjson
import pytest
import redis.asyncio as redis

from broadcaster.demo.answer import simulated_answer, tokens
from broadcaster.demo.producer import run_producer
from broadcaster.demo.queue import Job
from broadcaster.settings import Settings
from tests.support.nodes import StartApp
from tests.support.processes import RedisServer
from tests.support.wait import eventually

QUEUE = "sse:demo:jobs"


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    async with redis.Redis.from_url(redis_server.url) as client:
        yield client


async def test_the_queue_is_bounded_and_expires(
    redis_server: RedisServer, start_app: StartApp, client: redis.Redis
) -> None:
    node = await start_app(redis_url=redis_server.url, demo_queue_max=3, demo_job_ttl=30)
    async with aiohttp.ClientSession() as session:
        for n in range(3):
            body = {"channel": f"demo:{n}", "prompt": "hi"}
            async with session.post(f"{node}/demo/ask", json=body) as answer:
                assert answer.status == 202
                assert (await answer.json())["producer"] == "queue"
        async with session.post(f"{node}/demo/ask", json=body) as answer:
            assert answer.status == 503
            assert await answer.text() == "the demo queue holds 3 questions already\n"
    assert await client.llen(QUEUE) == 3
    assert 0 < await client.pttl(QUEUE) <= 30_000
    jobs = [Job.decode(raw) for raw in await client.lrange(QUEUE, 0, -1)]
    assert [job.channel for job in jobs] == ["demo:0", "demo:1", "demo:2"]
    assert all(time.time() < job.expires <= time.time() + 30 for job in jobs)


async def test_the_producer_answers_only_fresh_questions_on_demo_channels(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    stale = Job("demo:stale", "old", time.time() - 1)
    foreign = Job("payments", "inject", time.time() + 60)
    fresh = Job("demo:fresh", "why?", time.time() + 60)
    await client.rpush(QUEUE, b"garbage", stale.encode(), foreign.encode(), fresh.encode())
    settings = Settings(redis_url=redis_server.url, demo_token_delay=0)
    producer = asyncio.create_task(run_producer(settings, settings, redis_server.url))
    try:
        history = "sse:history:demo:fresh"

        async def entries() -> list[tuple[bytes, dict[bytes, bytes]]]:
            return cast(list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(history))

        async def answered() -> bool:
            return any(fields[b"e"] == b"done" for _, fields in await entries())

        await eventually(answered, 10, "the fresh question's whole answer")
        said = [fields[b"e"] for _, fields in await entries()]
        events = said.count(b"token")  # the words, those of each 50 ms in one event
        assert said == [b"thinking"] + [b"token"] * events + [b"done"]
        chunks = len(tokens(simulated_answer("why?")))
        done = (await entries())[-1][1][b"d"]
        assert orjson.loads(done) == {"chunks": chunks, "events": events}
        # The queue is in order: the entries before the fresh one were dropped.
        assert await client.llen(QUEUE) == 0
        assert not await client.exists("sse:history:demo:stale", "sse:history:payments")
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
