"""broadcaster: horizontally scaled Server-Sent Events over Redis pub/sub."""

from importlib.metadata import PackageNotFoundError, version

from broadcaster.app import create_app
from broadcaster.client import (
    AsyncPublisher,
    HttpPublisher,
    Publisher,
    PublishError,
    RedisPublisher,
    SyncHttpPublisher,
    SyncPublisher,
    SyncRedisPublisher,
)
from broadcaster.core.message import Message
from broadcaster.core.publication import Publication
from broadcaster.settings import Settings

try:
    __version__ = version("sse-broadcaster")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

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
    "__version__",
    "create_app",
]
