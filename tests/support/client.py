"""An SSE test client over aiohttp that records what a subscriber receives."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

import aiohttp

from .sse import Event, Parser
from .wait import wait_until

BROKER_WAIT = 20


class Subscriber:
    """One open /events connection; `events` fills as they arrive."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.parser = Parser()
        self.events: list[Event] = []
        self.raw = bytearray()
        self.ended = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            decoder = codecs.getincrementaldecoder("utf-8")()
            async for chunk in self.response.content.iter_any():
                self.raw += chunk
                self.events.extend(self.parser.feed(decoder.decode(chunk)))
        except aiohttp.ClientError:
            pass
        finally:
            self.ended.set()

    async def wait_for(self, count: int, timeout: float = 10) -> list[Event]:
        """Wait until at least `count` events have arrived; return them all."""
        await wait_until(lambda: len(self.events) >= count, timeout, f"{count} events")
        return self.events

    async def close(self) -> None:
        """Drop the connection."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.response.close()


@contextlib.asynccontextmanager
async def subscribe(
    session: aiohttp.ClientSession,
    base_url: str,
    channels: Sequence[str],
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> AsyncIterator[Subscriber]:
    """Open /events on `channels`; yields once the headers (and the subscription) are in.

    Like any client, it comes back while the node says its broker is unavailable (a
    Redis restart, a failover), for up to `BROKER_WAIT` seconds.
    """
    params = [("channel", channel) for channel in channels] + list((query or {}).items())
    deadline = time.monotonic() + BROKER_WAIT
    while True:
        response = await session.get(
            f"{base_url}/events", params=params, headers=headers, timeout=aiohttp.ClientTimeout()
        )
        if response.status != 503 or time.monotonic() > deadline:
            break
        text = await response.text()
        assert text.startswith("broker unavailable"), text
        await asyncio.sleep(0.05)
    assert response.status == 200, await response.text()
    subscriber = Subscriber(response)
    try:
        yield subscriber
    finally:
        await subscriber.close()
