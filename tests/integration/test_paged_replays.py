"""Replays read from Redis a page at a time: what happens between pages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as redis

from broadcaster.brokers.config import LibraryConfig
from broadcaster.brokers.redis import RedisBroker
from broadcaster.core.history import Start
from broadcaster.core.publication import Publication
from broadcaster.core.replay import Replay
from tests.support.processes import RedisServer

KILOBYTE = "x" * 1000


@pytest.fixture
async def broker(redis_server: RedisServer) -> AsyncIterator[RedisBroker]:
    broker = RedisBroker.from_url(redis_server.url, config=LibraryConfig(history_maxlen=300))
    await broker.start(lambda channel, message: None)
    yield broker
    await broker.close()


async def test_a_channel_trimmed_between_pages_is_told_there_and_the_rest_goes_on(
    broker: RedisBroker,
) -> None:
    batch = [Publication("ab"[n % 2], KILOBYTE) for n in range(600)]
    ids = await broker.publish(batch)
    replay = await broker.replay(["a", "b"], Start.resume(ids[0]))
    assert replay.more is not None and replay.resets == {}
    pages = replay.more()
    first_later = await anext(pages)
    # Meanwhile `a` gets 300 new messages: everything it had is trimmed away.
    await broker.publish([Publication("a", "new")] * 300)
    rest = [item async for page in pages for item in page]
    notices = [m for _, c, m in rest if m.event == "reset"]
    assert [orjson.loads(m.data) for m in notices] == [{"channels": ["a"], "reason": "trimmed"}]
    got = [m.id for _, _, m in [*replay.items, *first_later, *rest] if m.id is not None]
    wanted = ids[1:]
    assert got == [i for i in wanted if i in got], "in order, nothing twice"
    assert set(ids[1::2]) <= set(got), "every message of `b`"
    assert not set(got) - set(ids), "nothing published after the replay's head"
    body = b"".join([data async for data, _ in replay.pieces()])
    assert body.endswith(f"id: {ids[-1]}\n\n".encode())  # a reset: then the head


async def test_a_redis_that_lost_the_function_library_gets_it_again(
    broker: RedisBroker, redis_server: RedisServer
) -> None:
    ids = await broker.publish([Publication("a", "1"), Publication("a", "2")])
    async with redis.Redis.from_url(redis_server.url) as client:
        await client.function_flush()
    replay: Replay = await broker.replay(["a"], Start.resume(ids[0]))
    assert [m.id for _, m in replay.messages] == ids[1:]


async def test_more_concurrent_reads_than_the_pool_holds_wait_their_turn(
    broker: RedisBroker,
) -> None:
    # redis-py's pool opens at most 100 connections and refuses the 101st.
    ids = await broker.publish([Publication(f"c{n}", "x") for n in range(150)])
    replays = await asyncio.gather(
        *(broker.replay([f"c{n}", "other"], Start.resume(ids[0])) for n in range(150))
    )
    assert all(r.resets == {} for r in replays), "none was told history is unavailable"
    assert [m.id for r in replays[1:] for _, m in r.messages] == ids[1:]
