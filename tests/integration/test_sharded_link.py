"""The pub/sub link in sharded mode, on a real Redis Cluster: SSUBSCRIBE on the shard of a
channel's group, raw and durable `smessage`s, fences, and the `sunsubscribe` Redis pushes
when the slot moves to another shard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from broadcaster import RedisPublisher
from broadcaster.brokers.redis.link import PubSubLink
from broadcaster.core.message import unpack
from tests.support.processes import RedisServer
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow


@dataclass
class Heard:
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)
    subscribed: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)


@asynccontextmanager
async def sharded_link(shard: RedisServer) -> AsyncIterator[tuple[PubSubLink, Heard]]:
    """A sharded link, running on a connection to `shard`."""
    heard = Heard()
    link = PubSubLink(
        "sse:",
        ping_interval=5,
        on_message=lambda *message: heard.messages.append(message),
        on_subscribed=heard.subscribed.append,
        sharded=True,
        on_moved=heard.moved.append,
    )
    client = aioredis.Redis(port=shard.port, protocol=2)
    conn = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    await conn.connect()
    link.open([])
    running = asyncio.create_task(link.run(conn, lambda: None))
    try:
        yield link, heard
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        link.close()
        await conn.disconnect()
        await client.aclose()


async def test_a_sharded_link_hears_raw_and_durable_messages_of_its_shard(
    redis_cluster: RedisClusterGroup,
) -> None:
    owner = redis_cluster.owner("{room7}")
    async with sharded_link(owner) as (link, heard):
        done = asyncio.get_running_loop().create_future()
        link.subscribe("{room7}chat", done)
        await done
        assert heard.subscribed == ["{room7}chat"]
        assert "sse:{room7}:#{room7}chat" in owner.cli("PUBSUB", "SHARDCHANNELS")
        owner.cli("SPUBLISH", "sse:{room7}:{room7}chat", "raw text")
        url = f"redis+cluster://127.0.0.1:{owner.port}"
        async with RedisPublisher.from_url(url) as publisher:
            sent = await publisher.publish("{room7}chat", "durable")
        assert await link.fence()  # everything published before it has been read
        (raw, durable) = heard.messages
        assert raw == ("{room7}chat", b"raw text", False)
        assert durable[0] == "{room7}chat" and durable[2] is True
        message = unpack(durable[1], None)
        assert (message.id, message.data) == (sent, "durable")


async def test_a_slot_that_moves_is_told_as_moved_not_as_an_unsubscribe(
    redis_cluster: RedisClusterGroup,
) -> None:
    owner = redis_cluster.owner("{room7}")
    async with sharded_link(owner) as (link, heard):
        for channel in ("{room7}chat", "{room7}typing"):
            done = asyncio.get_running_loop().create_future()
            link.subscribe(channel, done)
            await done
        link.unsubscribe("{room7}typing")  # asked for: not a move
        assert await link.fence()
        target = next(p for p in redis_cluster.primaries() if p is not owner)
        redis_cluster.move_slot(redis_cluster.slot("{room7}"), target)
        await wait_until(lambda: heard.moved == ["{room7}chat"], 10, "the move")
        assert await link.fence()
        assert heard.moved == ["{room7}chat"]


async def test_a_subscribe_on_the_wrong_shard_is_told_as_moved_and_the_link_goes_on(
    redis_cluster: RedisClusterGroup,
) -> None:
    owner = redis_cluster.owner("{room7}")
    elsewhere = redis_cluster.channel_elsewhere(owner)
    async with sharded_link(owner) as (link, heard):
        done = asyncio.get_running_loop().create_future()
        link.subscribe(elsewhere, done)
        await done  # answered: by the MOVED
        assert heard.moved == [elsewhere] and heard.subscribed == []
        assert await link.fence()  # the link is still up
        done = asyncio.get_running_loop().create_future()
        link.subscribe("{room7}chat", done)
        await done
        assert heard.subscribed == ["{room7}chat"]
