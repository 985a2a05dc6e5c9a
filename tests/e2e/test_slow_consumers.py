"""50 stuck clients during a publish storm: they are cut off, memory stays bounded,
and the fast clients get every message."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import aiohttp
import pytest
import redis.asyncio as redis

from tests.support.client import subscribe
from tests.support.processes import Node, RedisServer, rss_bytes
from tests.support.wait import eventually

pytestmark = pytest.mark.slow

STUCK = 50
MESSAGES = 4000
PAYLOAD = "x" * 2000  # 8 MB per subscriber in all: far past the 1 MiB pending bound


async def stuck_client(port: int) -> socket.socket:
    """Subscribes, then never reads again (a tiny receive buffer, like a stalled phone)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, b"GET /events?channel=storm HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await loop.sock_recv(sock, 4096)
    assert head.startswith(b"HTTP/1.1 200")
    return sock


async def test_stuck_clients_are_cut_off_and_memory_stays_bounded(
    redis_server: RedisServer, start_node: Callable[..., Node]
) -> None:
    node = start_node(redis_server.url)
    assert node.process is not None
    stuck = [await stuck_client(node.port) for _ in range(STUCK)]
    baseline = rss_bytes(node.process.pid)
    async with (
        aiohttp.ClientSession() as session,
        redis.Redis.from_url(redis_server.url) as client,
        subscribe(session, node.url, ["storm"]) as fast_one,
        subscribe(session, node.url, ["storm"]) as fast_two,
    ):
        ids = []
        for start in range(0, MESSAGES, 200):
            async with client.pipeline(transaction=False) as pipe:
                for n in range(start, start + 200):
                    pipe.fcall("sse_publish", 1, "storm", f"{n} {PAYLOAD}")
                ids += [raw.decode() for raw in await pipe.execute()]
            # The fast clients are this process's own readers: on a loaded machine it
            # could fall over 1 MiB behind them and they would be cut off as slow, rightly.
            # Each batch (400 KB) waits for them, so only the stuck clients fall behind.
            for fast in (fast_one, fast_two):
                await fast.wait_for(len(ids), timeout=60)
        for fast in (fast_one, fast_two):
            assert [e.id for e in await fast.wait_for(MESSAGES, timeout=60)] == ids
        peak = rss_bytes(node.process.pid)

        async with session.get(f"{node.url}/metrics") as answer:
            text = await answer.text()

        async def all_cut_off() -> bool:
            async with session.get(f"{node.url}/metrics") as answer:
                return (
                    f"broadcaster_slow_consumer_disconnects_total {STUCK}.0" in await answer.text()
                )

        await eventually(all_cut_off, 10, "every stuck client to be cut off")
    # Unbounded, 50 stuck clients would hold 50 x 8 MB = 400 MB of unsent events.
    assert peak - baseline < 120 * 1024 * 1024, (baseline, peak, text)
    for sock in stuck:
        sock.close()
