"""`broadcaster serve --workers N`: N nodes on one port, each publish reaching all of them,
one scrape showing every worker, presence counting every worker's subscribers, SIGTERM
draining them all, a fallen worker replaced."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable

import aiohttp

from tests.support.processes import Node, RedisServer, run_broadcaster
from tests.support.publish import publish
from tests.support.wait import eventually, wait_until

SHUTDOWN_TIMEOUT = 5
TOKEN = "workers-token"
HELLO = re.compile(rb'event: hello\ndata: \{"node":"([^"]+)"\}')


class Stream:
    """A raw /events connection that says which worker serves it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.received = b""
        self.worker = ""

    @classmethod
    async def open(cls, port: int, channel: str) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /events?channel={channel}&hello HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stream = cls(reader, writer)
        await stream.read_until(lambda: HELLO.search(stream.received) is not None)
        found = HELLO.search(stream.received)
        assert found is not None
        stream.worker = found[1].decode()
        return stream

    async def read_until(self, done: Callable[[], bool], timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                chunk = await self.reader.read(65536)
                assert chunk, f"stream ended early: {self.received!r}"
                self.received += chunk

    async def read_to_end(self) -> None:
        async with asyncio.timeout(SHUTDOWN_TIMEOUT + 5):
            while chunk := await self.reader.read(65536):
                self.received += chunk


async def open_on_every_worker(port: int, workers: int, channel: str) -> list[Stream]:
    """Open streams until each worker holds some (the kernel spreads them by hash)."""
    streams: list[Stream] = []
    while len({s.worker for s in streams}) < workers:
        held = sorted(s.worker for s in streams)
        assert len(streams) < 200, f"connections never reached every worker: {held}"
        streams += await asyncio.gather(*(Stream.open(port, channel) for _ in range(8)))
    return streams


async def workers_node(start_node: Callable[..., Node], redis: RedisServer, count: int) -> Node:
    """A node of `count` workers, every one of them listening."""
    node = start_node(
        redis.url,
        workers=str(count),
        shutdown_timeout=str(SHUTDOWN_TIMEOUT),
        node_id="w",
        publish_token=TOKEN,
    )
    await wait_until(
        lambda: node.log.read_text().count(" listening on ") == count, 30, "every worker"
    )
    return node


async def test_workers_share_the_port_and_every_publish_reaches_all_of_them(
    start_node: Callable[..., Node], redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    node = await workers_node(start_node, redis_server, 2)
    streams = await open_on_every_worker(node.port, 2, "news")
    assert {s.worker for s in streams} == {"w/0", "w/1"}
    for n in range(5):  # each POST lands on either worker
        await publish(session, node.url, "news", f"m{n}", token=TOKEN)
    for stream in streams:
        await stream.read_until(lambda s=stream: s.received.count(b"data: m") == 5)  # type: ignore[misc]
        assert re.findall(rb"data: (m\d)", stream.received) == [b"m0", b"m1", b"m2", b"m3", b"m4"]

    # Any worker answers a scrape with every worker's series.
    async with session.get(f"{node.url}/metrics") as answer:
        text = await answer.text()
    held = dict(re.findall(r'^broadcaster_connections\{worker="(\d)"\} (\S+)$', text, re.M))
    assert set(held) == {"0", "1"}
    assert sum(float(v) for v in held.values()) == len(streams)

    # SIGTERM on the parent drains every worker: each stream ends cleanly, within the bound.
    endings = [asyncio.create_task(stream.read_to_end()) for stream in streams]
    node.signal(signal.SIGTERM)
    assert node.process is not None
    code = await asyncio.to_thread(node.process.wait, SHUTDOWN_TIMEOUT + 5)
    assert code == 0, node.log.read_text()
    await asyncio.gather(*endings)
    for stream in streams:
        assert re.search(rb"retry: \d+\n\n\r\n0\r\n\r\n$", stream.received), stream.received[-80:]
        stream.writer.close()
    log = node.log.read_text()
    assert "node=w/0" in log and "node=w/1" in log and "all workers stopped" in log


async def test_presence_counts_every_worker_and_every_node(
    start_node: Callable[..., Node], redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    node = await workers_node(start_node, redis_server, 2)
    other = start_node(redis_server.url, node_id="other")
    streams = await open_on_every_worker(node.port, 2, "room")
    held = await session.get(f"{other.url}/events", params={"channel": "room"})

    async def counted(expected: int) -> None:
        async def probe() -> bool:
            for base in (node.url, other.url):  # (either worker answers the first)
                async with session.get(f"{base}/presence", params={"channel": "room"}) as got:
                    if (await got.json())["channels"] != {"room": expected}:
                        return False
            return True

        await eventually(probe, 15, f"{expected} subscribers counted on every node")

    try:
        await counted(len(streams) + 1)
        leaving = [s for s in streams if s.worker == "w/0"]
        for stream in leaving:
            stream.writer.close()
        await counted(len(streams) - len(leaving) + 1)
    finally:
        held.close()
        for stream in streams:
            stream.writer.close()
    await counted(0)


async def test_a_fallen_worker_is_replaced_and_the_other_keeps_streaming(
    start_node: Callable[..., Node], redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    node = await workers_node(start_node, redis_server, 2)
    streams = await open_on_every_worker(node.port, 2, "c")
    assert node.process is not None
    found = re.search(r"node w/0 \(pid (\d+)\) listening", node.log.read_text())
    assert found is not None
    os.kill(int(found[1]), signal.SIGKILL)  # no chance to drain
    await wait_until(lambda: "worker 0 ended" in node.log.read_text(), 10, "the supervisor")
    await wait_until(
        lambda: node.log.read_text().count(" listening on ") == 3, 30, "a new worker 0"
    )
    survivors = [s for s in streams if s.worker == "w/1"]
    # Both workers serve again: new connections reach a new worker 0 too.
    fresh = await open_on_every_worker(node.port, 2, "c")
    await publish(session, node.url, "c", "after", token=TOKEN)
    for stream in survivors + fresh:
        await stream.read_until(lambda s=stream: b"data: after" in s.received)  # type: ignore[misc]
    for stream in streams + fresh:
        stream.writer.close()


def serve_workers(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run `broadcaster serve --workers 2 <args>` with only these BROADCASTER_ settings,
    until it exits."""
    return run_broadcaster("serve", "--workers", "2", *args, **settings)


def test_more_than_one_worker_needs_redis() -> None:
    done = serve_workers()
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "broadcaster: 2 workers need BROADCASTER_REDIS_URL: workers share nothing but Redis "
        "(the embedded broker lives in one process)"
    )


def test_workers_that_cannot_listen_stop_everything(redis_server: RedisServer) -> None:
    with socket.socket() as taken:  # another program holds the port, without SO_REUSEPORT
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = serve_workers("--port", port, redis_url=redis_server.url, host="127.0.0.1")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if "cannot listen" in line]
    assert line.startswith(
        f"broadcaster: cannot listen on 127.0.0.1:{port}: address already in use, by pid "
        f"{os.getpid()} ("
    )
