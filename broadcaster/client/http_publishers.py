"""Publishing through a node's `POST /publish` (works with the embedded broker too), and
reading its `GET /presence`.

A batch is one request with a JSON array (several, one after the other, past 1,000
messages or about 256 KiB); the node answers each with the array of ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import httpx
import orjson

from broadcaster.brokers.protocol import ChannelClosed
from broadcaster.client.asynchronous import Publisher
from broadcaster.client.errors import PublishError, Unavailable
from broadcaster.client.presence import Presence, parse_presence, presence_query
from broadcaster.client.synchronous import SyncPublisher
from broadcaster.core.publication import Publication

UNAVAILABLE = (502, 503, 504)
CONFLICT = 409  # a publish to a closed channel


class HttpPublisher(Publisher):
    """Publishes through a node from async code (aiohttp)."""

    retryable = (aiohttp.ClientConnectionError, TimeoutError, Unavailable)

    def __init__(
        self, base_url: str, token: str = "", *, timeout: float = 30, retries: int = 3
    ) -> None:
        super().__init__(retries=retries)
        self._url = base_url.rstrip("/") + "/publish"
        self._presence_url = base_url.rstrip("/") + "/presence"
        self._headers = _headers(token)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def presence(
        self,
        channels: str | Sequence[str],
        *,
        clients: bool = False,
        limit: int | None = None,
        after: str | None = None,
    ) -> Presence:
        """The node's `GET /presence` for `channels`: subscribers per channel, and with
        `clients` (one channel) a page of its identified subscribers, at most `limit`, from
        after the cursor `after` (a previous page's `next`). Sends the publisher's token,
        which needs the channels' `subscribe` or `presence` rights when the node checks
        JWTs. Raises PublishError for a refusal (400, 401, 403), Unavailable (502, 503,
        504) and connection errors once the retries are spent, ValueError for bad input."""
        query = presence_query(channels, clients=clients, limit=limit, after=after)
        return await self._retrying(lambda: self._read_presence(query))

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _send(self, batch: Sequence[Publication]) -> list[str]:
        session = self._open()
        ids: list[str] = []
        for body in _bodies(batch):
            async with session.post(self._url, data=body, headers=self._headers) as response:
                if response.status >= 300:
                    _refused(response.status, await response.text())
                ids += _ids(await response.read())
        return ids

    async def _read_presence(self, query: tuple[tuple[str, str], ...]) -> Presence:
        session = self._open()
        async with session.get(self._presence_url, params=query, headers=self._headers) as answer:
            if answer.status >= 300:
                raise _refusal(answer.status, await answer.text())
            return parse_presence(await answer.read())


class SyncHttpPublisher(SyncPublisher):
    """Publishes through a node from synchronous code (httpx)."""

    retryable = (httpx.TransportError, Unavailable)

    def __init__(
        self, base_url: str, token: str = "", *, timeout: float = 30, retries: int = 3
    ) -> None:
        super().__init__(retries=retries)
        self._url = base_url.rstrip("/") + "/publish"
        self._presence_url = base_url.rstrip("/") + "/presence"
        self._client = httpx.Client(headers=_headers(token), timeout=timeout)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def presence(
        self,
        channels: str | Sequence[str],
        *,
        clients: bool = False,
        limit: int | None = None,
        after: str | None = None,
    ) -> Presence:
        """The node's `GET /presence`, as `HttpPublisher.presence` reads it."""
        query = presence_query(channels, clients=clients, limit=limit, after=after)
        return self._retrying(lambda: self._read_presence(query))

    def _read_presence(self, query: tuple[tuple[str, str], ...]) -> Presence:
        answer = self._client.get(self._presence_url, params=query)
        if answer.status_code >= 300:
            raise _refusal(answer.status_code, answer.text)
        return parse_presence(answer.content)

    def _send(self, batch: Sequence[Publication]) -> list[str]:
        ids: list[str] = []
        for body in _bodies(batch):
            response = self._client.post(self._url, content=body)
            if response.status_code >= 300:
                _refused(response.status_code, response.text)
            ids += _ids(response.content)
        return ids


def _headers(token: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


BODY_ITEMS = 1000
"""Messages one request carries at most (a node takes arrays of 1 to 1,000)."""
BODY_BYTES = 256 * 1024
"""About how many bytes one request carries at most, far below a node's body limit
(`BROADCASTER_MAX_MESSAGE_BYTES`, 1 MiB by default); a larger message goes alone."""


def _bodies(batch: Sequence[Publication]) -> list[bytes]:
    """The batch as JSON arrays, in order, each within BODY_ITEMS and BODY_BYTES: a long
    backlog of a stream is several requests, sent one after the other."""
    bodies: list[bytes] = []
    items: list[bytes] = []
    size = 0
    for publication in batch:
        item = orjson.dumps(_item(publication))
        if items and (len(items) == BODY_ITEMS or size + len(item) > BODY_BYTES):
            bodies.append(b"[" + b",".join(items) + b"]")
            items, size = [], 0
        items.append(item)
        size += len(item) + 1
    if items:
        bodies.append(b"[" + b",".join(items) + b"]")
    return bodies


def _item(publication: Publication) -> dict[str, Any]:
    item: dict[str, Any] = {"channel": publication.channel, "data": publication.data}
    if publication.event is not None:
        item["event"] = publication.event
    if publication.idempotency_key is not None:
        item["idempotency_key"] = publication.idempotency_key
    if publication.close:
        item["close"] = True
    if publication.reopen:
        item["reopen"] = True
    return item


def _refused(status: int, text: str) -> None:
    if status == CONFLICT:
        raise ChannelClosed(_reason(text))
    raise _refusal(status, text)


def _refusal(status: int, text: str) -> PublishError:
    """The error for a node's refusal: Unavailable (worth retrying) or PublishError."""
    return (Unavailable if status in UNAVAILABLE else PublishError)(status, _reason(text))


def _reason(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no reason given"


def _ids(body: bytes) -> list[str]:
    return [str(sent) for sent in orjson.loads(body)]
