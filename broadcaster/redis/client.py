"""The options of every Redis client the package opens, in one place."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

# RESP2, not redis-py's RESP3 default: Redis types a RESP3 subscriber as `normal`, so
# `CLIENT KILL TYPE pubsub` and the pub/sub output-buffer limit would not apply to it.
PROTOCOL = 2
CONNECT_TIMEOUT = 5


def connect(url: str) -> aioredis.Redis:
    """An asyncio client (a lazy connection pool) for the Redis server at `url`."""
    return aioredis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, protocol=PROTOCOL)


def connect_sync(url: str) -> redis.Redis:
    """A synchronous, thread-safe client (a lazy connection pool) for `url`."""
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, protocol=PROTOCOL)
