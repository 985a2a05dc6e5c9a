"""The client side, from Python: publishing (through Redis or through a node),
subscribing, and a node's presence (`HttpPublisher.presence`).

One naming convention: the async class or function has the plain name, and its
synchronous twin adds `Sync` (classes) or `_sync` (functions): `RedisPublisher` and
`SyncRedisPublisher`, `subscribe` and `subscribe_sync`. `Publisher` and `SyncPublisher`
are the bases that `publish`, `publish_many` and `stream` come from; every publisher
retries connection errors and timeouts with idempotency keys, so a retry never
publishes twice.
"""

from broadcaster.brokers.protocol import ChannelClosed
from broadcaster.client.asynchronous import Publisher
from broadcaster.client.errors import PublishError
from broadcaster.client.events import Event
from broadcaster.client.http_publishers import HttpPublisher, SyncHttpPublisher
from broadcaster.client.items import Item
from broadcaster.client.presence import Presence, PresenceClient
from broadcaster.client.redis_publishers import RedisPublisher, SyncRedisPublisher
from broadcaster.client.subscriber import subscribe, subscribe_sync
from broadcaster.client.subscription import SubscribeError
from broadcaster.client.synchronous import SyncPublisher

__all__ = [
    "ChannelClosed",
    "Event",
    "HttpPublisher",
    "Item",
    "Presence",
    "PresenceClient",
    "PublishError",
    "Publisher",
    "RedisPublisher",
    "SubscribeError",
    "SyncHttpPublisher",
    "SyncPublisher",
    "SyncRedisPublisher",
    "subscribe",
    "subscribe_sync",
]
