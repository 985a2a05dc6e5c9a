"""Half-open connections and header floods: the node keeps serving and releases everything."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import aiohttp
import pytest

from tests.support.client import subscribe
from tests.support.processes import Node
from tests.support.publish import post
from tests.support.sse import Event
from tests.support.wait import eventually

HALF_OPEN = 2000


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
async def test_half_open_connections_and_header_floods(start_node: Callable[..., Node]) -> None:
    node = start_node(publish_token="t", header_timeout="2")
    assert node.process is not None
    baseline = open_fds(node.process.pid)
    half_open = []
    for n in range(HALF_OPEN):
        source = f"127.0.0.{2 + n // 1000}"
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", node.port, local_addr=(source, 0)
        )
        writer.write(b"GET /events?channel=x HTTP/1.1\r\nHost: a\r\n")  # never finished
        half_open.append((reader, writer))
    async with aiohttp.ClientSession() as session:
        for flood in ({"X-Big": "a" * 100_000}, {f"X-H{i}": "v" for i in range(5000)}):
            async with session.get(f"{node.url}/healthz", headers=flood) as answer:
                assert answer.status == 400
        async with subscribe(session, node.url, ["ok"]) as sub:
            _, sent = await post(session, node.url, {"channel": "ok", "data": "still serving"})
            published = sent["id"]
            assert await sub.wait_for(1) == [Event("still serving", id=published)]
        # The node answers every connection that never finished its headers, then closes it.
        answers = await asyncio.wait_for(
            asyncio.gather(*(reader.read() for reader, _ in half_open)), 30
        )
        assert {answer.split(b"\r\n")[0] for answer in answers} == {b"HTTP/1.1 408 Request Timeout"}
        for _, writer in half_open:
            writer.close()

        async def released() -> bool:
            return open_fds(node.process.pid) <= baseline + 5  # type: ignore[union-attr]

        await eventually(released, 20, "the half-open connections to be released")
        async with session.get(f"{node.url}/metrics") as answer:
            assert "broadcaster_connections 0.0" in await answer.text()


async def served(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Send one kept-alive GET /healthz and read its whole response."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_every_request_on_a_kept_alive_connection_has_the_header_timeout(
    start_node: Callable[..., Node],
) -> None:
    node = start_node(header_timeout="1")
    trickler = await asyncio.open_connection("127.0.0.1", node.port)
    idle = await asyncio.open_connection("127.0.0.1", node.port)
    for reader, writer in (trickler, idle):
        assert (await served(reader, writer)).startswith(b"HTTP/1.1 200")

    async def trickle() -> None:
        # A second request on the kept-alive connection, one header byte at a time.
        for byte in b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"z" * 1000:
            trickler[1].write(bytes([byte]))
            await asyncio.sleep(0.1)

    slow = asyncio.create_task(trickle())
    try:
        # Long before aiohttp's 75 s keep-alive: the node answers 408 and closes.
        answer = await asyncio.wait_for(trickler[0].read(), 20)
    finally:
        slow.cancel()
    assert (
        answer == b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    # The other connection sat idle (sending nothing) for longer than the timeout: idle
    # keep-alive is not a slow request, and it still serves.
    assert (await served(*idle)).startswith(b"HTTP/1.1 200")
    for _, writer in (trickler, idle):
        writer.close()
