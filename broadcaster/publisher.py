"""The Python publishing API: to every node through Redis, or through one node over HTTP."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

import aiohttp
import redis.asyncio as redis
from redis.exceptions import ResponseError

from . import library
from .channels import check_channel
from .message import Message
from .redis_client import connect


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
    """Publishes durably through Redis (`FCALL sse_publish`), where every node listens.

    The retention settings only matter when no node has loaded the function yet.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "sse:",
        history_maxlen: int = 1000,
        history_ttl: int = 86400,
    ) -> None:
        self._client = client
        self._library = (prefix, history_maxlen, history_ttl)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "sse:") -> RedisPublisher:
        """A publisher for the Redis server at `url`."""
        return cls(connect(url), prefix=prefix)

    async def publish(self, channel: str, data: str, event: str | None = None) -> str | None:
        """Publish one message; returns its id. Raises ValueError for a bad channel or event."""
        return (await self.send(check_channel(channel), Message(data, event))).id

    async def send(self, channel: str, message: Message) -> Message:
        """Publish an already validated message; returns it with its id."""
        args = [message.data] + ([message.event] if message.event else [])
        try:
            id_ = await self._client.fcall("sse_publish", 1, channel, *args)
        except ResponseError as exc:
            if "Function not found" not in str(exc):
                raise
            await self.load_library(replace=False)
            id_ = await self._client.fcall("sse_publish", 1, channel, *args)
        text = id_.decode() if isinstance(id_, bytes) else str(id_)
        return Message(message.data, message.event, text)

    async def load_library(self, *, replace: bool = True) -> None:
        """Load the `sse_publish` function into Redis."""
        await library.load(self._client, *self._library, replace=replace)

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
