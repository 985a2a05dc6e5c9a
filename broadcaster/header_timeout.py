"""Close connections that never finish a request's headers (slowloris), with a 408."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HeaderTimeout:
    """Watches a server's connections; one sweep per `timeout` closes the stragglers."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        # Connections that got a complete request, and when others were first seen;
        # both forget connections that are gone at each sweep.
        self._served: set[object] = set()
        self._first_seen: dict[RequestHandler, float] = {}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Mark the request's connection as one that sent complete headers."""
        self._served.add(request.protocol)
        return await handler(request)

    async def sweep_forever(self, server: web.Server) -> None:
        """Every `timeout`, close connections that were first seen a full period ago."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._timeout)
            now = loop.time()
            alive = set(server.connections)
            self._served &= alive
            self._first_seen = {c: t for c, t in self._first_seen.items() if c in alive}
            for connection in alive - self._served:
                first = self._first_seen.setdefault(connection, now)
                if now - first >= self._timeout and connection.transport is not None:
                    with contextlib.suppress(OSError, RuntimeError):
                        connection.transport.write(TIMED_OUT)
                    connection.transport.close()
