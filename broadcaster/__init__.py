"""broadcaster: horizontally scaled Server-Sent Events over Redis pub/sub."""

from .app import create_app
from .message import Message
from .publication import Publication
from .publishing import (
    AsyncPublisher,
    HttpPublisher,
    Publisher,
    PublishError,
    RedisPublisher,
    SyncHttpPublisher,
    SyncPublisher,
    SyncRedisPublisher,
)
from .settings import Settings

__all__ = [
    "AsyncPublisher",
    "HttpPublisher",
    "Message",
    "Publication",
    "PublishError",
    "Publisher",
    "RedisPublisher",
    "Settings",
    "SyncHttpPublisher",
    "SyncPublisher",
    "SyncRedisPublisher",
    "create_app",
]
