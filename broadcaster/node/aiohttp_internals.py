"""Every use of aiohttp beyond its public API, in one place, checked at import.

aiohttp has no public way to do three things a node needs:
- **send a response's headers with its first body bytes**: a stream's headers wait for
  its preamble, which always follows at once: one write instead of two per connection
  (a reconnect storm is thousands of connections at once). `StreamResponse`'s
  `_send_headers_immediately` (since aiohttp 3.12) says so;
- **take a live stream's connection over** (`detach`): while a handler runs, aiohttp
  keeps the parsed request, the protocol and its parser, the response and its writer,
  two tasks and a stack of coroutine frames: about 9 KB of the 12 KB an idle stream
  cost, none of it needed once the preamble is out. This relies on aiohttp's request
  handler closing nothing once its `transport` is None, and releasing its state in
  `connection_lost`;
- **wrap each connection's protocol** (`WrappedSite`, for the header timeout): a
  `BaseSite` that creates its own server from `_runner`, `_backlog` and `_server`.

The range below is the one the suite tests (pyproject.toml bounds aiohttp to it). On
another release a node refuses to start, naming the range, rather than break live
streams at run time. Guarded by tests/unit/test_internals.py (headers and preamble in
one write), tests/integration/test_handoff.py (nothing of aiohttp's outlives the
hand-off) and the end-to-end tests of streams, shutdown and slow or gone clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

SUPPORTED = ((3, 14), (3, 15))
"""aiohttp releases whose internals this module was written and tested against: from
the first, up to (not including) the second."""


def check(version: str) -> None:
    """Raise ImportError, naming the supported releases, unless `version` is one."""
    found = tuple(int(part) for part in version.split(".")[:2])
    (low, high), shown = SUPPORTED, ".".join
    if not low <= found < high or not (
        hasattr(web.StreamResponse, "_send_headers_immediately")
        and {"_runner", "_backlog", "_server"} <= set(web.BaseSite.__slots__)
        and callable(getattr(RequestHandler, "force_close", None))
    ):
        raise ImportError(
            f"broadcaster needs aiohttp >={shown(map(str, low))},<{shown(map(str, high))}"
            f" (it relies on internals of those releases); this is aiohttp {version}:"
            f" pip install 'aiohttp>={shown(map(str, low))},<{shown(map(str, high))}'"
        )


check(aiohttp.__version__)


class OneWriteResponse(web.StreamResponse):
    """A streamed response whose headers go out with the first bytes of its body."""

    _send_headers_immediately = False


def detach(request: web.Request, protocol: asyncio.Protocol) -> None:
    """Give `request`'s connection to `protocol`; aiohttp forgets the connection once the
    handler returns. The response must not end its body: its new owner does.

    Raises ConnectionResetError if aiohttp saw the connection go.
    """
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client went away before its stream went live")
    handler = request.protocol  # aiohttp's request handler for this connection
    task = request.task  # the handler's request loop
    transport.set_protocol(protocol)
    transport.resume_reading()  # to notice the client leave, even if aiohttp had paused
    # aiohttp closes its transport when its request loop ends: now it has none, and the
    # loop ends after this request...
    handler.transport = None
    handler.force_close()
    # ...whereupon the handler drops its parser, request and tasks, as if the connection
    # were lost.
    task.add_done_callback(lambda _: handler.connection_lost(None))


class WrappedSite(web.BaseSite):
    """aiohttp's TCP site, with each connection's aiohttp protocol wrapped by `wrap`; with
    `reuse_port`, other processes may listen on the same port (SO_REUSEPORT)."""

    __slots__ = ("_host", "_port", "_reuse_port", "_wrap")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        wrap: Callable[[asyncio.Protocol], asyncio.Protocol],
        backlog: int,
        *,
        reuse_port: bool,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._wrap = wrap
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        """The URL this site listens on."""
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        """Listen, handing each connection to aiohttp through its wrapper."""
        await super().start()
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.Protocol:
            return self._wrap(server())

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog, reuse_port=self._reuse_port
        )
