"""Publishing through Redis (`FCALL sse_publish`), where every node listens.

A batch is one pipeline of FCALLs: one round trip, published in order. With the
config's `replicas`, the pipeline ends with a WAIT: a publish is acknowledged once that
many replicas hold it, and one they do not confirm in `replica_timeout` seconds is
retried under its key. The prefix must be the nodes'; the retention options only matter
when no node has loaded the function yet.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from broadcaster.brokers.config import DEFAULT_CONFIG, LibraryConfig
from broadcaster.brokers.redis.client import connect_publisher, connect_publisher_sync
from broadcaster.brokers.redis.library import AsyncClient, Library, NotReplicated, SyncClient
from broadcaster.client.asynchronous import Publisher
from broadcaster.client.synchronous import SyncPublisher
from broadcaster.core.publication import Publication

RETRYABLE = (RedisConnectionError, RedisTimeoutError, NotReplicated, OSError)


class RedisPublisher(Publisher):
    """Publishes durably through Redis from async code."""

    retryable = RETRYABLE

    def __init__(
        self,
        client: AsyncClient,
        *,
        config: LibraryConfig = DEFAULT_CONFIG,
        retries: int = 3,
    ) -> None:
        super().__init__(retries=retries)
        self._client = client
        self.library = Library(config)

    @classmethod
    def from_url(
        cls, url: str, *, config: LibraryConfig = DEFAULT_CONFIG, retries: int = 3
    ) -> RedisPublisher:
        """A publisher for the Redis server at `url` (a `redis+cluster://` URL names a Redis
        Cluster's seed nodes); options as for the constructor."""
        return cls(connect_publisher(url), config=config, retries=retries)

    async def aclose(self) -> None:
        """Close the Redis connection pool."""
        await self._client.aclose()

    async def _send(self, batch: Sequence[Publication]) -> list[str]:
        return await self.library.publish(self._client, batch)


class SyncRedisPublisher(SyncPublisher):
    """Publishes durably through Redis from synchronous code (redis-py's sync client)."""

    retryable = RETRYABLE

    def __init__(
        self,
        client: SyncClient,
        *,
        config: LibraryConfig = DEFAULT_CONFIG,
        retries: int = 3,
    ) -> None:
        super().__init__(retries=retries)
        self._client = client
        self.library = Library(config)

    @classmethod
    def from_url(
        cls, url: str, *, config: LibraryConfig = DEFAULT_CONFIG, retries: int = 3
    ) -> SyncRedisPublisher:
        """A publisher for the Redis server at `url` (a `redis+cluster://` URL names a Redis
        Cluster's seed nodes); options as for the constructor."""
        return cls(connect_publisher_sync(url), config=config, retries=retries)

    def close(self) -> None:
        """Close the Redis connection pool."""
        self._client.close()

    def _send(self, batch: Sequence[Publication]) -> list[str]:
        return self.library.publish_sync(self._client, batch)
