"""Each node's counters in Redis for the cluster dashboard: one hash field per node."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
from redis.exceptions import RedisError

from broadcaster.brokers.redis.library import AsyncClient

Stats = dict[str, Any]

FRESH = 5.0  # a node whose counters are older than this is not shown
FORGOTTEN = 60.0  # ... and older than this, removed from the hash
KEY_TTL_MS = 10_000  # the hash goes away when no node reports any more


def key(prefix: str) -> str:
    """The hash of every node's counters."""
    return f"{prefix}nodes"


async def report_forever(client: AsyncClient, prefix: str, read: Callable[[], Stats]) -> None:
    """Write this node's counters every second, and forget nodes that stopped reporting."""
    while True:
        with contextlib.suppress(RedisError, OSError):
            stats = read()
            async with client.pipeline(transaction=False) as pipe:
                pipe.hset(key(prefix), stats["node"], orjson.dumps(stats))
                pipe.pexpire(key(prefix), KEY_TTL_MS)
                pipe.hgetall(key(prefix))
                *_, everyone = await pipe.execute()
            gone = [node for node, raw in everyone.items() if _age(raw) > FORGOTTEN]
            if gone:
                await client.hdel(key(prefix), *gone)
        await asyncio.sleep(1)


async def cluster(client: AsyncClient, prefix: str, own: Stats) -> list[Stats]:
    """Every node that reported lately, this one included, sorted by node id."""
    try:
        everyone = await client.hgetall(key(prefix))
    except (RedisError, OSError):
        everyone = {}
    fresh = [orjson.loads(raw) for raw in everyone.values() if _age(raw) <= FRESH]
    nodes = {str(n["node"]): n for n in [*fresh, own]}
    return [nodes[name] for name in sorted(nodes)]


def _age(raw: bytes | str) -> float:
    try:
        return time.time() - float(orjson.loads(raw)["time"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return float("inf")
