"""The options of every Redis client the package opens, in one place."""

from __future__ import annotations

import redis.asyncio as redis


def connect(url: str) -> redis.Redis:
    """A client (a lazy connection pool) for the Redis server at `url`.

    RESP2, not redis-py's RESP3 default: Redis types a RESP3 subscriber as `normal`, so
    `CLIENT KILL TYPE pubsub` and the pub/sub output-buffer limit would not apply to it.
    """
    return redis.Redis.from_url(url, socket_connect_timeout=5, protocol=2)
