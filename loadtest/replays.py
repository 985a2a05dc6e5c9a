"""Worst-case replays: what many concurrent `earliest` readers cost a node's memory.

`python -m loadtest.replays [--readers 200] [--broker redis|memory] [--hold 5]`

Fills 16 channels with 1,000 messages of 1 KB each (16 MB of history, the node keeping
1,000 a channel), then opens `--readers` connections that each ask for everything
retained on all 16 channels (`lastEventId=earliest`, each in a channel order of its own,
so no two share a read) and never read (receive buffer 4 KB). It reports the node's RSS
before, and at its peak over `--hold` seconds with all of them connected. Then the same
number of readers read their replays to the end, at once: RSS peak, bytes, seconds.
Everything runs on loopback and stops by itself; the JSON goes to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as redis

from broadcaster.cluster.processes import free_port, rss_kb

from .node import Managed, gauge, node_command, node_env, start_node, start_redis

CHANNELS = [f"replay{n}" for n in range(16)]
RETAINED = 1000
PAYLOAD = "x" * 1000
TOKEN = "loadtest-replays"
# An id alone (no event): the replay's last frame, after its reset (maybe in a chunk).
POSITION = re.compile(rb"(?:\n\n|\r\n[0-9a-f]+\r\n)id: [0-9]+-[0-9]+\n\n")


async def fill(base_url: str, redis_url: str | None) -> None:
    """RETAINED messages of 1 KB on each channel."""
    if redis_url is not None:
        async with redis.Redis.from_url(redis_url) as client:
            for channel in CHANNELS:
                async with client.pipeline(transaction=False) as pipe:
                    for _ in range(RETAINED):
                        pipe.fcall("sse_publish", 1, channel, PAYLOAD)
                    await pipe.execute()
        return
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for channel in CHANNELS:
            for _ in range(RETAINED // 100):
                batch = [{"channel": channel, "data": PAYLOAD}] * 100
                async with session.post(base_url + "/publish", json=batch) as answer:
                    answer.raise_for_status()


def request(n: int) -> bytes:
    order = CHANNELS[n % 16 :] + CHANNELS[: n % 16]
    query = "&".join(f"channel={c}" for c in order)
    return f"GET /events?{query}&lastEventId=earliest HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def connect(port: int, n: int, receive_buffer: int | None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, request(n))
    return sock


async def stuck(port: int, base_url: str, readers: int, hold: float, pid: int) -> dict[str, Any]:
    """`readers` that never read: RSS with all of them waiting on their replays."""
    before = rss_kb(pid) or 0
    socks = [await connect(port, n, 4096) for n in range(readers)]
    try:
        deadline = time.monotonic() + 60
        while gauge(base_url, "broadcaster_connections") != readers:
            connected = gauge(base_url, "broadcaster_connections")
            assert time.monotonic() < deadline, f"{connected} of {readers} readers connected"
            await asyncio.sleep(0.1)
        peak = before
        until = time.monotonic() + hold
        while time.monotonic() < until:
            peak = max(peak, rss_kb(pid) or 0)
            await asyncio.sleep(0.2)
    finally:
        for sock in socks:
            sock.close()
    return {
        "readers": readers,
        "rss_before_mb": round(before / 1024, 1),
        "rss_peak_mb": round(peak / 1024, 1),
        "per_reader_kb": round((peak - before) / readers, 1),
    }


async def read_all(port: int, readers: int, pid: int) -> dict[str, Any]:
    """`readers` that read their replays to the end (the `id:` of the newest message)."""
    loop = asyncio.get_running_loop()
    peak = rss_kb(pid) or 0
    received = 0

    async def one(n: int) -> None:
        nonlocal received
        sock = await connect(port, n, None)
        tail = head = b""
        try:
            while True:
                data = await loop.sock_recv(sock, 1 << 16)
                assert data, f"the node closed a replay: {head[:200]!r} ... {tail[-200:]!r}"
                head = head or data
                received += len(data)
                tail = tail[-64:] + data
                if POSITION.search(tail):  # the replay's last line, after its reset
                    return
        finally:
            sock.close()

    started = time.monotonic()
    tasks = [asyncio.create_task(one(n)) for n in range(readers)]
    while not all(task.done() for task in tasks):
        peak = max(peak, rss_kb(pid) or 0)
        await asyncio.wait(tasks, timeout=0.2)
        assert time.monotonic() - started < 300, "readers did not finish"
    for task in tasks:
        task.result()
    return {
        "readers": readers,
        "rss_peak_mb": round(peak / 1024, 1),
        "mb_received": round(received / 1e6, 1),
        "seconds": round(time.monotonic() - started, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="replays-") as workdir:
        redis_server, redis_url = (None, None)
        if args.broker == "redis":
            redis_server, redis_url = start_redis(Path(workdir), None)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = node_env(TOKEN, redis_url)
        env["BROADCASTER_HISTORY_MAXLEN"] = str(RETAINED)
        node = Managed("node", node_command(port, None), env, Path(workdir) / "node.log")
        log = Path(workdir) / "node.log"
        try:
            start_node(node, base_url)
            await fill(base_url, redis_url)
            result = {
                "broker": args.broker,
                "history_mb": round(len(CHANNELS) * RETAINED * len(PAYLOAD) / 1e6, 1),
                "stuck": await stuck(port, base_url, args.readers, args.hold, node.pid),
                "read_all": await read_all(port, args.readers, node.pid),
            }
        except AssertionError:
            print("".join(log.read_text().splitlines(keepends=True)[-20:]))  # why, if it says
            raise
        finally:
            node.stop()
            if redis_server is not None:
                redis_server.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.replays", description=__doc__)
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--broker", choices=["redis", "memory"], default="redis")
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
