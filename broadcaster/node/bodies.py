"""Reading a request body within bounds: its size, its time, and how many an address may
send at once. A body trickled byte by byte (slowloris) would otherwise hold a handler,
its buffer and a descriptor for as long as the client liked."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web

from broadcaster.node.limits import client_ip
from broadcaster.node.replies import Refused
from broadcaster.node.state import SETTINGS, TRUSTED_PROXIES

UPLOADS_PER_ADDRESS = 32  # request bodies one client address may be sending at once


class BodyRefused(Refused):
    """The body was not read: too large, too slow, or too many at once from one address."""

    def response(self) -> web.Response:
        """The refusal; the connection closes after it (the body may be half read)."""
        answer = super().response()
        answer.force_close()
        return answer


class Uploads:
    """Request bodies being read, per client address."""

    def __init__(self) -> None:
        self._per_address: Counter[str] = Counter()
        self.count = 0
        """Bodies being read now, from every address."""

    def enter(self, address: str) -> None:
        """Count a body from `address`; raises BodyRefused (429) past the bound."""
        if self._per_address[address] >= UPLOADS_PER_ADDRESS:
            raise BodyRefused(429, "too many requests sending bodies from this address at once")
        self._per_address[address] += 1
        self.count += 1

    def leave(self, address: str) -> None:
        """That body is read (or given up)."""
        self._per_address[address] -= 1
        self.count -= 1
        if not self._per_address[address]:
            del self._per_address[address]


UPLOADS = web.AppKey("uploads", Uploads)


async def read_body(request: web.Request, limit: int, too_large: str) -> bytes:
    """The whole body, at most `limit` bytes, within BROADCASTER_BODY_TIMEOUT.

    Raises BodyRefused: 413 (`too_large`) past the limit, whether the client said so in
    Content-Length or not; 408 when the body is not in within the time; 429 when the
    client's address is sending too many bodies at once.
    """
    if (request.content_length or 0) > limit:
        raise BodyRefused(413, too_large)
    timeout = request.app[SETTINGS].body_timeout
    address = client_ip(request, request.app[TRUSTED_PROXIES])
    uploads = request.app[UPLOADS]
    uploads.enter(address)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(413, too_large)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyRefused(
            408, f"the body took longer than {timeout:g} s (BROADCASTER_BODY_TIMEOUT)"
        ) from None
    finally:
        uploads.leave(address)
    return b"".join(chunks)
