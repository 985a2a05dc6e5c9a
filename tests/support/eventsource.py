"""A client that behaves like a browser's EventSource: it reconnects with Last-Event-ID."""

from __future__ import annotations

import asyncio
import codecs
import contextlib

import aiohttp

from .sse import Event, Parser


class EventSource:
    """Follows channels through a URL forever, reconnecting after each end of stream.

    Waits the server's `retry:` (capped by `max_wait` to keep tests quick) between tries.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str, max_wait: float = 0.5) -> None:
        self.session = session
        self.url = url
        self.max_wait = max_wait
        self.parser = Parser()
        self.events: list[Event] = []
        self.connects = 0
        self.retries: list[int] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            headers = (
                {"Last-Event-ID": self.parser.last_event_id} if self.parser.last_event_id else {}
            )
            retry_before = self.parser.retry
            try:
                async with self.session.get(
                    self.url, headers=headers, timeout=aiohttp.ClientTimeout()
                ) as response:
                    if response.status == 200:
                        self.connects += 1
                        decoder = codecs.getincrementaldecoder("utf-8")()
                        async for chunk in response.content.iter_any():
                            self.events.extend(self.parser.feed(decoder.decode(chunk)))
            except (aiohttp.ClientError, OSError):
                pass
            if self.parser.retry is not None and self.parser.retry != retry_before:
                self.retries.append(self.parser.retry)
            wait = (self.parser.retry or 3000) / 1000
            await asyncio.sleep(min(wait, self.max_wait))

    async def close(self) -> None:
        """Stop following."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
