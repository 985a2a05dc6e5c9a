"""A plain client on each primary of a Redis Cluster, for what must run on one
connection: a group's history read is one MULTI over its keys, which all lie in the
group's slot. The slot map is redis-py's; a redirection (the slot moved, or is moving)
reads it again, and the caller retries."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    SlotNotCoveredError,
    TryAgainError,
)

from broadcaster.brokers.redis.client import NodeClient
from broadcaster.brokers.redis.redis_internals import refresh_slots

REDIRECTIONS = (MovedError, AskError, TryAgainError, ClusterDownError, SlotNotCoveredError)
"""Answers that say a slot is served elsewhere, is moving, or has no primary right now.
(Each is a RedisError: a caller that retries link errors retries these too.)"""


def primary_of(cluster: aioredis.RedisCluster, channel: str) -> tuple[str, int]:
    """The address of the primary that serves `channel`'s group, by the slot map;
    SlotNotCoveredError if none does."""
    node = cluster.get_node_from_key(channel)
    if node is None:
        raise SlotNotCoveredError(f"no primary serves {channel!r} now")
    return node.host, int(node.port)


class Primaries:
    """The client of the primary that serves a channel's group, by the slot map."""

    def __init__(self, cluster: aioredis.RedisCluster, node: NodeClient) -> None:
        self._cluster = cluster
        self._node = node
        self._clients: dict[tuple[str, int], aioredis.Redis] = {}
        self._refreshing: asyncio.Task[None] | None = None

    def client(self, channel: str) -> aioredis.Redis:
        """The primary that serves `channel`'s group; SlotNotCoveredError if none does."""
        address = primary_of(self._cluster, channel)
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = self._node(*address)
        return client

    async def redirected(self) -> None:
        """A read met a redirection: read the slot map again (one reading at a time,
        shared by everyone who met one meanwhile)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(refresh_slots(self._cluster))
        await asyncio.shield(self._refreshing)

    async def close(self) -> None:
        """Close every client."""
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)
