"""A live stream's connection leaves aiohttp: its request state is freed, the stream goes on.

`broadcaster/node/aiohttp_internals.detach` takes the connection over from aiohttp once the
headers and preamble are out. These tests hold the node to what that promises, on real
sockets: aiohttp's objects for the connection are freed (by reference counting, at
once), live events still arrive, what the client sends is ignored, and the client's
leaving ends the stream and frees its connection slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_protocol import RequestHandler

from broadcaster import create_app
from broadcaster.node.state import HUB
from broadcaster.settings import Settings
from tests.support.nodes import MakeServer, base_url
from tests.support.publish import publish
from tests.support.wait import wait_until

TOKEN = "s3cret"
REQUEST = b"GET /events?channel=c&hello HTTP/1.1\r\nHost: node\r\n\r\n"


async def start(
    aiohttp_server: MakeServer, refs: list[weakref.ref[object]]
) -> tuple[web.Application, TestServer]:
    app = create_app(Settings(publish_token=TOKEN, max_connections=1))

    @web.middleware
    async def watch(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/events":
            refs.append(weakref.ref(request))
        response = await handler(request)
        if request.path == "/events":
            refs.append(weakref.ref(response))
        return response

    app.middlewares.append(watch)
    return app, await aiohttp_server(app)


def handlers() -> list[RequestHandler]:
    """aiohttp's protocol objects alive in this process (they take no weak references)."""
    return [o for o in gc.get_objects() if isinstance(o, RequestHandler)]


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await asyncio.wait_for(reader.read(4096), 10)
        assert chunk, f"connection closed before {marker!r}; got {data!r}"
        data += chunk
    return data


@contextlib.asynccontextmanager
async def live_stream(
    server: TestServer, request: bytes = REQUEST
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]]:
    """A raw connection to `server` that sent `request` and read up to the `hello` event:
    the reader, the writer and what was read; closed at the end."""
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        yield reader, writer, await read_until(reader, b"event: hello")
    finally:
        writer.close()


async def test_a_live_stream_keeps_nothing_of_aiohttp_and_still_streams(
    aiohttp_server: MakeServer,
) -> None:
    refs: list[weakref.ref[object]] = []
    app, server = await start(aiohttp_server, refs)
    async with live_stream(server) as (reader, writer, head):
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert len(refs) == 2  # the request, the response
        await wait_until(
            lambda: all(ref() is None for ref in refs) and not handlers(),
            5,
            "aiohttp's objects to be freed",
        )
        assert app[HUB].stream_count == 1

        writer.write(b"whatever the client says now is ignored\r\n\r\n")
        async with aiohttp.ClientSession() as session:
            await publish(session, base_url(server), "c", "still here", token=TOKEN)
        assert b"data: still here" in await read_until(reader, b"still here")


async def test_a_client_that_leaves_ends_its_stream_and_frees_its_slot(
    aiohttp_server: MakeServer,
) -> None:
    app, server = await start(aiohttp_server, [])
    async with live_stream(server) as (reader, writer, _):
        writer.write_eof()  # half-closed: the client is done
        await wait_until(lambda: app[HUB].stream_count == 0, 5, "the stream to end")
        assert await reader.read() == b""  # the node closed its side too

    # max_connections=1: the slot is free again.
    async with live_stream(server) as (_, _, head):
        assert head.startswith(b"HTTP/1.1 200 OK")


async def test_shutdown_ends_a_live_stream_with_a_retry_and_the_end_of_the_body(
    aiohttp_server: MakeServer,
) -> None:
    app, server = await start(aiohttp_server, [])
    async with live_stream(server) as (reader, _, _):
        app[HUB].close_all("shutdown")
        rest = await asyncio.wait_for(reader.read(), 10)  # until the node closes
        assert b"retry: " in rest
        assert rest.endswith(b"0\r\n\r\n")
        await wait_until(lambda: app[HUB].stream_count == 0, 5, "the stream to end")


async def test_an_http10_stream_is_unframed_and_ends_when_the_node_closes_it(
    aiohttp_server: MakeServer,
) -> None:
    app, server = await start(aiohttp_server, [])
    http10 = REQUEST.replace(b"HTTP/1.1", b"HTTP/1.0")
    async with live_stream(server, http10) as (reader, _, head):
        assert head.startswith(b"HTTP/1.0 200 OK") and b"chunked" not in head.lower()
        async with aiohttp.ClientSession() as session:
            await publish(session, base_url(server), "c", "plain", token=TOKEN)
        assert (await read_until(reader, b"plain\n\n")).endswith(b"data: plain\n\n")
        app[HUB].close_all("shutdown")
        rest = await asyncio.wait_for(reader.read(), 10)  # the end of the body is the close
        assert re.fullmatch(rb"retry: \d+\n\n", rest), rest
