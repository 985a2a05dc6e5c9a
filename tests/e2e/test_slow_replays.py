"""Replays against clients that read them slowly or not at all: cut off like slow live
clients, and never held whole in the node's memory."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
import redis.asyncio as redis

from tests.support.processes import Node, RedisServer
from tests.support.wait import eventually, wait_until

pytestmark = pytest.mark.slow

CHANNELS = [f"r{n}" for n in range(16)]
RETAINED = 1000
PAYLOAD = "x" * 1000  # 16 channels x 1,000 x 1 KB: 16 MB of history


async def fill(url: str) -> None:
    async with redis.Redis.from_url(url) as client:
        for channel in CHANNELS:
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(RETAINED):
                    pipe.fcall("sse_publish", 1, channel, PAYLOAD)
                await pipe.execute()


async def stuck_reader(port: int, channels: list[str]) -> socket.socket:
    """Asks for everything retained, reads the status line, then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    query = "&".join(f"channel={c}" for c in channels)
    request = f"GET /events?{query}&lastEventId=earliest HTTP/1.1\r\nHost: x\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    head = await loop.sock_recv(sock, 4096)
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    return sock


async def test_a_client_slow_to_read_its_replay_is_cut_off_as_slow(
    redis_server: RedisServer, start_node: Callable[..., Node]
) -> None:
    node = start_node(redis_server.url, history_maxlen=str(RETAINED))
    await fill(redis_server.url)
    sock = await stuck_reader(node.port, CHANNELS)
    try:
        # Live messages pile up behind the unread replay: past MAX_PENDING_BYTES (1 MiB)
        # the client is as slow as a live one that stopped reading.
        async with redis.Redis.from_url(redis_server.url) as client:

            async def cut() -> bool:
                await client.fcall("sse_publish", 1, CHANNELS[0], PAYLOAD * 10)
                return node.metric("broadcaster_slow_consumer_disconnects_total") == 1

            await eventually(cut, 30, "the slow replay reader to be cut off")
        await wait_until(lambda: node.metric("broadcaster_connections") == 0, 10, "it to go")
    finally:
        sock.close()


READERS = 50


async def test_stuck_earliest_readers_keep_the_node_memory_bounded(
    redis_server: RedisServer, start_node: Callable[..., Node]
) -> None:
    node = start_node(redis_server.url, history_maxlen=str(RETAINED))
    await fill(redis_server.url)
    baseline = node.rss()
    readers = []
    try:
        for n in range(READERS):
            # Each asks for channels of its own order, so that no two share a read.
            readers.append(await stuck_reader(node.port, CHANNELS[n % 16 :] + CHANNELS[: n % 16]))
        await wait_until(
            lambda: node.metric("broadcaster_connections") == READERS, 30, "every reader"
        )
        grown = node.rss() - baseline
    finally:
        for sock in readers:
            sock.close()
    # Held whole, each replay (4 MiB of its 16 MB, the MAX_REPLAY_BYTES default) would be
    # several times over in memory: 730 MB for 50 before replays were paged.
    assert grown < 150 * 1024 * 1024, f"grew {grown / 1e6:.0f} MB"
