"""The embedded broker: one process, no Redis."""

from __future__ import annotations

import asyncio

from .broker import Deliver
from .message import Message


class MemoryBroker:
    """Delivers published messages to this process's own subscribers."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._channels: set[str] = set()

    @property
    def connected(self) -> bool:
        """Always true while started: there is nothing to lose a connection to."""
        return self._deliver is not None

    async def start(self, deliver: Deliver) -> None:
        """Begin delivering to `deliver`."""
        self._deliver = deliver

    async def close(self) -> None:
        """Stop delivering."""
        self._deliver = None

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """Subscriptions take effect at once."""
        self._channels.add(channel)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def unsubscribe(self, channel: str) -> None:
        """Stop delivering `channel`."""
        self._channels.discard(channel)

    async def publish(self, channel: str, message: Message) -> Message:
        """Deliver at once to local subscribers."""
        if self._deliver is not None and channel in self._channels:
            self._deliver(channel, message)
        return message
