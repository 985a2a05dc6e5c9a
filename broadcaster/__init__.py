"""broadcaster: horizontally scaled Server-Sent Events over Redis pub/sub."""

from .app import create_app
from .message import Message
from .publisher import HttpPublisher, Publisher, PublishError, RedisPublisher
from .settings import Settings

__all__ = [
    "HttpPublisher",
    "Message",
    "PublishError",
    "Publisher",
    "RedisPublisher",
    "Settings",
    "create_app",
]
