"""Close connections that take too long to send a request's headers (slowloris), with a 408.

aiohttp has a keep-alive timeout but no header timeout. So the listener wraps each
connection's aiohttp protocol in a `_Watched` one that passes every call through and
notes when a request starts: when the connection opens, and at the first byte after the
previous request. The middleware notes when aiohttp has read a whole request. A sweep
closes connections whose request started more than `timeout` ago and is still not read.
An idle kept-alive connection sends nothing, starts nothing, and is left to keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

from broadcaster.node.aiohttp_internals import WrappedSite

TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ProtocolFactory = Callable[[], asyncio.Protocol]


class HeaderTimeout:
    """Every request on every connection gets `timeout` seconds to deliver its headers."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        # Connections whose current request has started but is not read yet, and since when.
        self._started: dict[_Watched, float] = {}

    def site(
        self, runner: web.BaseRunner, host: str, port: int, backlog: int, *, reuse_port: bool
    ) -> web.BaseSite:
        """A TCP listener for `runner` whose connections this timeout watches; with
        `reuse_port`, other processes may listen on the same port (SO_REUSEPORT)."""
        return WrappedSite(
            runner, host, port, lambda inner: _Watched(inner, self), backlog, reuse_port=reuse_port
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The request is read: its connection is busy until the handler returns."""
        watched = request.transport.get_protocol() if request.transport is not None else None
        if not isinstance(watched, _Watched):
            return await handler(request)
        watched.busy = True
        self._started.pop(watched, None)
        try:
            return await handler(request)
        finally:
            watched.busy = False

    async def sweep_forever(self) -> None:
        """Four times per `timeout`, answer 408 to and close the connections that are late."""
        while True:
            await asyncio.sleep(self.timeout / 4)
            now = time.monotonic()
            late = [c for c, since in self._started.items() if now - since >= self.timeout]
            for connection in late:
                del self._started[connection]
                connection.time_out()

    def _starting(self, connection: _Watched) -> None:
        if not connection.busy and connection not in self._started:
            # (Not the loop's time: Python 3.11's get_running_loop asks for the process id.)
            self._started[connection] = time.monotonic()

    def _gone(self, connection: _Watched) -> None:
        self._started.pop(connection, None)


class _Watched(asyncio.Protocol):
    """One connection's aiohttp protocol, with the header timeout looking on."""

    __slots__ = ("_inner", "_timeout", "_transport", "busy")

    def __init__(self, inner: asyncio.Protocol, timeout: HeaderTimeout) -> None:
        self._inner = inner
        self._timeout = timeout
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport: asyncio.WriteTransport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)
        self._timeout._starting(self)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._timeout._starting(self)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._timeout._gone(self)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def time_out(self) -> None:
        """Answer 408 and close."""
        if self._transport is not None and not self._transport.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                self._transport.write(TIMED_OUT)
            self._transport.close()
