"""Following channels of a node as a client: `subscribe` (async) and `subscribe_sync`.

Each opens `GET /events` and yields every event as it arrives. When the stream ends or
the connection fails, it waits the server's `retry:` hint and reconnects with
`Last-Event-ID`, so the events it yields have no gap and no duplicate across node
restarts, load-balancer failovers and dead connections. Refusals that retrying cannot
fix raise `SubscribeError`. Both are shells around one `Subscription` (no I/O of its
own); the sync one is the engine of `broadcaster subscribe`. Both end when every channel
is closed and the node answers 204 No Content, as a browser's EventSource stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Sequence,
)

import httpx

from broadcaster.client.events import Event
from broadcaster.client.subscription import (
    MAX_DELAY,
    MAX_REASON_BYTES,
    READ_TIMEOUT,
    Retry,
    Subscription,
)

DEFAULT_URL = "http://127.0.0.1:8080"


async def subscribe(
    url: str,
    channels: Sequence[str],
    *,
    last_event_id: str | None = None,
    token: str | None = None,
    notify: Callable[[str], None] | None = None,
    read_timeout: float = READ_TIMEOUT,
    max_delay: float = MAX_DELAY,
    client: httpx.AsyncClient | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[Event, None]:
    """Yield the events of `channels` from the node (or load balancer) at `url`, forever:
    `async for event in subscribe(url, ["news"], last_event_id=...)`.

    `last_event_id` starts after that id (`"earliest"`: from the oldest retained event);
    it stays in the URL of every attempt, and from the first id received on, each
    reconnect also sends `Last-Event-ID`, which the node prefers. `token` goes out as
    `Authorization: Bearer`. `notify` gets one short line per connection loss, failed
    attempt and recovery. A connection that sends no byte for `read_timeout` seconds
    (heartbeats included) counts as lost. It ends when every channel is closed and every
    event was yielded (the node answers 204, as an EventSource stops). Raises
    `SubscribeError` when the node refuses for good.
    """
    session = Subscription(
        url,
        channels,
        last_event_id=last_event_id,
        token=token,
        notify=notify,
        read_timeout=read_timeout,
        max_delay=max_delay,
    )
    http = client or httpx.AsyncClient(timeout=session.timeout, follow_redirects=True)
    try:
        while True:
            request = http.stream(
                "GET", session.endpoint, params=session.params, headers=session.headers()
            )
            try:
                async with request as response:
                    body = b""
                    if session.wants_body(response.status_code, response.headers):
                        body = await _head(response.aiter_bytes())
                    if not session.accept(
                        response.status_code, response.headers, response.reason_phrase, body
                    ):
                        return
                    async for chunk in response.aiter_bytes():
                        for event in session.feed(chunk):
                            yield event
                    for event in session.ended():
                        yield event
            except (Retry, httpx.TransportError) as failure:
                session.failed(failure)
            await sleep(session.delay())
    finally:
        if client is None:
            await http.aclose()


def subscribe_sync(
    url: str,
    channels: Sequence[str],
    *,
    last_event_id: str | None = None,
    token: str | None = None,
    notify: Callable[[str], None] | None = None,
    read_timeout: float = READ_TIMEOUT,
    max_delay: float = MAX_DELAY,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Generator[Event, None, None]:
    """`subscribe` for synchronous code: `for event in subscribe_sync(url, ["news"])`."""
    session = Subscription(
        url,
        channels,
        last_event_id=last_event_id,
        token=token,
        notify=notify,
        read_timeout=read_timeout,
        max_delay=max_delay,
    )
    http = client or httpx.Client(timeout=session.timeout, follow_redirects=True)
    try:
        while True:
            request = http.stream(
                "GET", session.endpoint, params=session.params, headers=session.headers()
            )
            try:
                with request as response:
                    body = b""
                    if session.wants_body(response.status_code, response.headers):
                        body = _head_sync(response.iter_bytes())
                    if not session.accept(
                        response.status_code, response.headers, response.reason_phrase, body
                    ):
                        return
                    for chunk in response.iter_bytes():
                        yield from session.feed(chunk)
                    yield from session.ended()
            except (Retry, httpx.TransportError) as failure:
                session.failed(failure)
            sleep(session.delay())
    finally:
        if client is None:
            http.close()


async def _head(chunks: AsyncIterator[bytes]) -> bytes:
    """The first MAX_REASON_BYTES or so of a refusal's body (what arrived, if it breaks)."""
    body = b""
    try:
        async for chunk in chunks:
            body += chunk
            if len(body) > MAX_REASON_BYTES:
                break
    except httpx.TransportError:
        pass  # The reason phrase will do.
    return body


def _head_sync(chunks: Iterator[bytes]) -> bytes:
    """`_head`, for the sync client."""
    body = b""
    try:
        for chunk in chunks:
            body += chunk
            if len(body) > MAX_REASON_BYTES:
                break
    except httpx.TransportError:
        pass  # The reason phrase will do.
    return body
