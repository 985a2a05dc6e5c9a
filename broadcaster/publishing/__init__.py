"""Publishing from Python: async and sync, through Redis or through a node.

Every publisher has `publish`, `publish_many` and `stream`, and retries connection
errors and timeouts with idempotency keys, so a retry never publishes twice.
"""

from .asynchronous import AsyncPublisher
from .errors import PublishError
from .http_publishers import HttpPublisher, SyncHttpPublisher
from .items import Item
from .redis_publishers import RedisPublisher, SyncRedisPublisher
from .synchronous import SyncPublisher

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
