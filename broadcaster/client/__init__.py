"""Publishing from Python: async and sync, through Redis or through a node.

Every publisher has `publish`, `publish_many` and `stream`, and retries connection
errors and timeouts with idempotency keys, so a retry never publishes twice.
"""

from broadcaster.client.asynchronous import AsyncPublisher
from broadcaster.client.errors import PublishError
from broadcaster.client.http_publishers import HttpPublisher, SyncHttpPublisher
from broadcaster.client.items import Item
from broadcaster.client.redis_publishers import RedisPublisher, SyncRedisPublisher
from broadcaster.client.synchronous import SyncPublisher

Publisher = AsyncPublisher

__all__ = [
    "AsyncPublisher",
    "HttpPublisher",
    "Item",
    "PublishError",
    "Publisher",
    "RedisPublisher",
    "SyncHttpPublisher",
    "SyncPublisher",
    "SyncRedisPublisher",
]
