"""broadcaster: horizontally scaled Server-Sent Events over Redis pub/sub."""

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from broadcaster import demo
from broadcaster.brokers.config import LibraryConfig
from broadcaster.brokers.protocol import Broker
from broadcaster.client import (
    ChannelClosed,
    Event,
    HttpPublisher,
    Presence,
    PresenceClient,
    Publisher,
    PublishError,
    RedisPublisher,
    SubscribeError,
    SyncHttpPublisher,
    SyncPublisher,
    SyncRedisPublisher,
    subscribe,
    subscribe_sync,
)
from broadcaster.core.message import Message
from broadcaster.core.publication import Publication
from broadcaster.node.process import app
from broadcaster.settings import Settings


def parts(settings: Settings) -> tuple[app.Part, ...]:
    """The optional parts of a node as `broadcaster serve` runs it: the demo (as
    BROADCASTER_DEMO says)."""
    return (demo.part(settings),)


def create_app(settings: Settings, broker: Broker | None = None) -> web.Application:
    """A node's application, as `broadcaster serve` runs it (with all its `parts`);
    `broker` overrides the one the settings choose."""
    return app.create_app(settings, broker, parts=parts(settings))


try:
    __version__ = version("sse-broadcaster")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ChannelClosed",
    "Event",
    "HttpPublisher",
    "LibraryConfig",
    "Message",
    "Presence",
    "PresenceClient",
    "Publication",
    "PublishError",
    "Publisher",
    "RedisPublisher",
    "Settings",
    "SubscribeError",
    "SyncHttpPublisher",
    "SyncPublisher",
    "SyncRedisPublisher",
    "__version__",
    "create_app",
    "subscribe",
    "subscribe_sync",
]
