"""The Python publishing API: to every node through Redis, or through one node over HTTP."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

import aiohttp
import redis.asyncio as redis

from .channels import check_channel
from .message import Message, pack


class Publisher(Protocol):
    """Anything that publishes messages to the nodes' subscribers."""

    async def publish(self, channel: str, data: str, event: str | None = None) -> str | None:
        """Publish `data` on `channel`; returns the message id, if it has one."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class _Closing:
    async def aclose(self) -> None:
        """Release connections."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class RedisPublisher(_Closing):
    """Publishes straight to Redis, where every node is listening."""

    def __init__(self, client: redis.Redis, *, prefix: str = "sse:") -> None:
        self._client = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "sse:") -> RedisPublisher:
        """A publisher for the Redis server at `url`."""
        return cls(redis.Redis.from_url(url, socket_connect_timeout=5), prefix=prefix)

    async def publish(self, channel: str, data: str, event: str | None = None) -> str | None:
        """Publish one message; raises ValueError for a bad channel or event type."""
        return (await self.send(check_channel(channel), Message(data, event))).id

    async def send(self, channel: str, message: Message) -> Message:
        """Publish an already validated message; returns it as delivered."""
        await self._client.publish(self._prefix + channel, pack(message))
        return message

    async def aclose(self) -> None:
        """Close the Redis connection pool."""
        await self._client.aclose()


class PublishError(Exception):
    """A node refused a publish; the message says why."""


class HttpPublisher(_Closing):
    """Publishes through a node's POST /publish (works with the embedded broker too)."""

    def __init__(self, base_url: str, token: str) -> None:
        self._url = base_url.rstrip("/") + "/publish"
        self._token = token
        self._session: aiohttp.ClientSession | None = None

    async def publish(self, channel: str, data: str, event: str | None = None) -> str | None:
        """Publish one message; raises PublishError with the node's reason on refusal."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = {"channel": channel, "data": data, "event": event}
        headers = {"Authorization": f"Bearer {self._token}"}
        async with self._session.post(self._url, json=body, headers=headers) as response:
            if response.status >= 300:
                reason = (await response.text()).strip()
                raise PublishError(f"{response.status}: {reason}")
            answer = await response.json()
        message_id = answer.get("id")
        return None if message_id is None else str(message_id)

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
