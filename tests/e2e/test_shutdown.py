"""Graceful stop: streams end with a proper end of body, within the bound, even 10,000 of them."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from collections.abc import Callable

import pytest

from tests.support.processes import Node, RedisServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

STREAMS = 10_000
SHUTDOWN_TIMEOUT = 10


async def open_stream(
    port: int, channel: str, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(f"GET /events?channel={channel} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await reader.readuntil(b"retry: 3000\n\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    return reader, writer


async def stop_with_sigterm(node: Node) -> int:
    """SIGTERM `node`; its exit status, which must come within the shutdown bound."""
    node.signal(signal.SIGTERM)
    assert node.process is not None
    try:
        return await asyncio.to_thread(node.process.wait, SHUTDOWN_TIMEOUT + 2)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"node still running {SHUTDOWN_TIMEOUT + 2}s after SIGTERM") from None


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    return await reader.read()  # until the node closes the connection


async def test_sigterm_ends_every_stream_cleanly(start_node: Callable[..., Node]) -> None:
    node = start_node(shutdown_timeout=str(SHUTDOWN_TIMEOUT))
    streams = []
    for batch in range(0, STREAMS, 500):
        # Spread over source addresses so ephemeral ports never run short.
        source = f"127.0.0.{2 + batch // 2500}"
        channel = f"c{node.port % 7}"
        streams += await asyncio.gather(
            *(open_stream(node.port, channel, source) for _ in range(500))
        )
    readers = [asyncio.create_task(read_to_end(reader)) for reader, _ in streams]
    code = await stop_with_sigterm(node)
    assert code == 0, node.log.read_text()
    await wait_until(lambda: all(task.done() for task in readers), 10, "every stream to end")
    tails = [task.result() for task in readers]
    # Every stream got a jittered reconnect hint, then a proper end of its chunked body.
    assert all(re.fullmatch(rb"[0-9a-f]+\r\nretry: \d+\n\n\r\n0\r\n\r\n", t) for t in tails)
    delays = {int(t.split(b"retry: ")[1].split(b"\n")[0]) for t in tails}
    assert min(delays) >= 3000 and max(delays) <= 9000
    assert len(delays) > 1000, "reconnects are spread, not all at once"
    for _, writer in streams:
        writer.close()


async def test_a_redis_backed_node_stops_with_streams_of_many_channels_open(
    redis_server: RedisServer, start_node: Callable[..., Node]
) -> None:
    # Each stream's end unsubscribes its channel while the node closes its Redis link:
    # a write to Redis that swallowed the link's cancellation once hung the shutdown.
    node = start_node(redis_server.url, shutdown_timeout=str(SHUTDOWN_TIMEOUT))
    streams = [await open_stream(node.port, f"many-{n}") for n in range(200)]
    code = await stop_with_sigterm(node)
    assert code == 0 and "stopped" in node.log.read_text(), node.log.read_text()
    for reader, writer in streams:
        assert (await reader.read()).endswith(b"0\r\n\r\n")
        writer.close()
