"""The key names Python reads (`brokers/redis/keys.py`) are those `sse_publish` writes,
on a single Redis and on a Redis Cluster (where a take-over's gaps list is the group's)."""

from __future__ import annotations

import pytest
import redis

from broadcaster import RedisPublisher
from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.core.ids import EventId
from tests.support.processes import RedisServer
from tests.support.redis_cluster import RedisClusterGroup


async def test_on_a_single_redis(redis_server: RedisServer) -> None:
    keys = KeySpace("sse:")
    async with RedisPublisher.from_url(redis_server.url) as publisher:
        sent = await publisher.publish("{room7}chat", "x")
    with redis.Redis(port=redis_server.port) as client:
        assert client.hget(keys.meta("{room7}chat"), "seq") == b"1"
        assert [i.decode() for i, _ in client.xrange(keys.history("{room7}chat"))] == [sent]
        assert keys.meta("any") == "sse:meta" and keys.gaps("any") == "sse:gaps"
        assert keys.pubsub("news") == ("sse:news", "sse:#news")


@pytest.mark.slow
async def test_on_a_redis_cluster(redis_cluster: RedisClusterGroup) -> None:
    keys = KeySpace("sse:", clustered=True)
    url = f"redis+cluster://{redis_cluster.seeds}"
    async with RedisPublisher.from_url(url) as publisher:
        sent = await publisher.publish("{room7}chat", "x")
        owner = redis_cluster.owner("{room7}")
        with redis.Redis(port=owner.port) as client:
            # A take-over of the group's sequence (another replication id), as on a
            # promoted replica: the gap goes to the group's own list.
            client.hset(keys.meta("{room7}chat"), "replid", "another")
            after = await publisher.publish("{room7}typing", "y")
            seq = client.hget(keys.meta("{room7}typing"), "seq")
            assert seq == str(1 + 1_000_000).encode()  # its last seq, and the jump
            history = [i.decode() for i, _ in client.xrange(keys.history("{room7}chat"))]
            assert history == [sent]
            [gap] = client.lrange(keys.gaps("{room7}x"), 0, -1)
            assert gap.decode().startswith(f"{sent}|")
            assert EventId.parse(after) > EventId.parse(sent)  # type: ignore[operator]
    assert keys.pubsub("{room7}chat") == ("sse:{room7}:{room7}chat", "sse:{room7}:#{room7}chat")
    assert keys.pubsub("news") == ("sse:{news}:news", "sse:{news}:#news")
