"""Publishing at a steady rate through HTTP, Redis FCALL or raw Redis PUBLISH, or to
Nchan's publisher location (`nchan`: POST /pub?channel=<name>, the data as the body).

Data is "<seq> <time.time_ns()> <channel>", padded with 'x' to `size` bytes; the sequence
counts per channel from 1 and carries on across calls to `run`, so subscribers can check
order. Publishes to one channel are kept in order on every path.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import hiredis

TICK = 0.005  # seconds between bursts
MAX_BURST = 5000  # messages per Redis pipeline
HTTP_IN_FLIGHT = 128
HTTP_PATHS = ("http", "nchan")
# Nchan answers 201 when the message reached subscribers and 202 when it was only stored.
ACCEPTED = {"http": (200,), "nchan": (201, 202)}


class Publisher:
    """Publishes messages and counts, per channel, how many it has published."""

    def __init__(
        self, path: str, *, http_url: str | None, token: str, redis_url: str | None, size: int
    ) -> None:
        if path in HTTP_PATHS and not http_url:
            raise ValueError(f"--publish {path} needs a node URL")
        if path in ("redis", "raw") and not redis_url:
            raise ValueError(f"--publish {path} needs --redis or --redis-url")
        self.path, self.http_url, self.token, self.redis_url, self.size = (
            path,
            http_url,
            token,
            redis_url,
            size,
        )
        self.published: dict[str, int] = defaultdict(int)
        self.errors = 0
        self._session: aiohttp.ClientSession | None = None
        self._redis: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._chain: dict[str, asyncio.Task[None]] = {}

    def data(self, channel: str, seq: int) -> str:
        text = f"{seq} {time.time_ns()} {channel}"
        return text if len(text) >= self.size else text + " " + "x" * (self.size - len(text) - 1)

    async def __aenter__(self) -> Publisher:
        if self.path in HTTP_PATHS:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=HTTP_IN_FLIGHT),
                headers={"Authorization": f"Bearer {self.token}"},
            )
        else:
            parts = urlsplit(self.redis_url or "")
            self._redis = await asyncio.open_connection(parts.hostname, parts.port or 6379)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._chain:
            await asyncio.gather(*self._chain.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._redis is not None:
            self._redis[1].close()

    async def run(self, channels: list[str], rate: float, duration: float) -> dict[str, Any]:
        """Publish `rate` messages/s in total, round-robin over `channels`, for `duration` s."""
        start = time.monotonic()
        sent, errors_before = 0, self.errors
        gate = asyncio.Semaphore(HTTP_IN_FLIGHT)
        while (elapsed := time.monotonic() - start) < duration:
            due = min(int(elapsed * rate) + 1, int(duration * rate)) - sent
            batch = []
            for _ in range(max(0, min(due, MAX_BURST))):
                channel = channels[sent % len(channels)]
                self.published[channel] += 1
                batch.append((channel, self.published[channel]))
                sent += 1
            if batch:
                if self._session is not None:
                    for channel, seq in batch:
                        await gate.acquire()
                        self._post(channel, seq, gate)
                else:
                    await self._redis_batch(batch)
            await asyncio.sleep(TICK)
        if self._chain:
            await asyncio.gather(*self._chain.values(), return_exceptions=True)
        took = time.monotonic() - start
        return {
            "published": sent,
            "seconds": round(took, 3),
            "rate": round(sent / took, 1),
            "errors": self.errors - errors_before,
        }

    def _post(self, channel: str, seq: int, gate: asyncio.Semaphore) -> None:
        before = self._chain.get(channel)  # the previous publish to this channel goes first
        data = self.data(channel, seq)
        assert self._session is not None and self.http_url is not None
        session, url, accepted = self._session, self.http_url, ACCEPTED[self.path]
        request: dict[str, Any] = (
            {"params": {"channel": channel}, "data": data.encode()}
            if self.path == "nchan"
            else {"json": {"channel": channel, "data": data}}
        )

        async def post() -> None:
            try:
                if before is not None:
                    await asyncio.gather(before, return_exceptions=True)
                async with session.post(url, **request) as answer:
                    if answer.status not in accepted:
                        self.errors += 1
                    await answer.read()
            except aiohttp.ClientError:
                self.errors += 1
            finally:
                gate.release()

        task = asyncio.ensure_future(post())
        self._chain[channel] = task
        task.add_done_callback(
            lambda t: self._chain.pop(channel, None) if self._chain.get(channel) is t else None
        )

    async def _redis_batch(self, batch: list[tuple[str, int]]) -> None:
        assert self._redis is not None
        reader, writer = self._redis
        out = []
        for channel, seq in batch:
            if self.path == "redis":
                out.append(_command("FCALL", "sse_publish", "1", channel, self.data(channel, seq)))
            else:
                out.append(_command("PUBLISH", "sse:" + channel, self.data(channel, seq)))
        writer.write(b"".join(out))
        parser = hiredis.Reader()
        for _ in batch:
            while (reply := parser.gets()) is False:
                parser.feed(await reader.read(65536))
            if isinstance(reply, hiredis.ReplyError):
                self.errors += 1


def _command(*parts: str) -> bytes:
    """One command in the Redis protocol (RESP)."""
    encoded = [p.encode() for p in parts]
    return b"".join(
        [f"*{len(encoded)}\r\n".encode()] + [b"$%d\r\n%s\r\n" % (len(p), p) for p in encoded]
    )
