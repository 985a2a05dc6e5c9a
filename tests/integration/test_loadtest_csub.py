"""The load generator's C subscriber (loadtest/csub.c) against a scripted loopback server.

Each event with a new sequence is sent in its own write that stops a few bytes into the
next block (inside a chunk-size line, a field name, between CR and LF...), and the test
waits for the client to report that sequence, so the next bytes arrive in another read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from loadtest import csub

CHANNEL = "ch"
PATH = f"/events?channel={CHANNEL}"


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert csub.compiler() is not None, "no C compiler: scripts/test.sh installs gcc"
    # -Werror: the source must stay free of warnings under the flags it is built with.
    return csub.build(tmp_path_factory.mktemp("csub"), (*csub.CFLAGS, "-Werror"))


@pytest.fixture
def core(binary: Path) -> Iterator[csub.Core]:
    core = csub.Core(binary)
    yield core
    core.close()


class Server:
    """Answers each GET with `status` and hands the connection to the test."""

    def __init__(self, chunked: bool, status: str) -> None:
        self.chunked, self.status = chunked, status
        self.connections: asyncio.Queue[tuple[bytes, str, asyncio.StreamWriter]] = asyncio.Queue()
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        self.writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        coding = b"Transfer-Encoding: chunked\r\n" if self.chunked else b""
        writer.write(
            f"HTTP/1.1 {self.status}\r\nContent-Type: text/event-stream\r\n".encode()
            + coding
            + b"\r\n"
        )
        await self.connections.put((head, writer.get_extra_info("peername")[0], writer))
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client hangs up or we close
        writer.close()

    async def next(self) -> tuple[bytes, str, asyncio.StreamWriter]:
        return await asyncio.wait_for(self.connections.get(), 5)


Start = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_server() -> AsyncIterator[Start]:
    servers: list[tuple[asyncio.Server, Server]] = []

    async def start(chunked: bool, status: str = "200 OK") -> Server:
        server = Server(chunked, status)
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append((listening, server))
        server.port = listening.sockets[0].getsockname()[1]
        return server

    yield start
    for listening, server in servers:
        listening.close()
        for writer in server.writers:
            writer.close()
        await asyncio.wait_for(asyncio.gather(*server.handlers, return_exceptions=True), 5)


def blocks(now: int) -> list[tuple[bytes, int | None]]:
    """SSE blocks, each with the sequence to wait for after it (None: no new one)."""
    return [
        (b"retry: 1000\n\n:\n\n", None),  # reconnection hint, heartbeat
        (b"id: 1\ndata: 1 %d ch\n\n" % now, 1),
        (b"id: 2\r\ndata: 2 %d ch\r\n\r\n" % now, 2),  # CRLF
        (b"id: 3\rdata: 3 %d ch xxxxxxxx\r\r" % now, 3),  # CR alone, padding
        (b": comment\nevent: message\nid: 5\ndata: 5 %d ch\n\n" % now, 5),  # gap: 4
        (b"data: 5 %d ch\n\n" % now, None),  # duplicate; no id: the last id stays 5
        (b"data: hello\n\n", None),  # unparsed
        (b"id: 6\n\n", None),  # moves the last id without an event (6 is never sent)
        (b"data:7 %d ch\n\n" % now, 7),  # no space after the colon
    ]


def encode(body: bytes, chunked: bool) -> tuple[bytes, list[int]]:
    """The wire bytes, and for each body byte the wire offset just after it.

    Chunks of 5 bytes (some with an extension) put chunk boundaries everywhere."""
    if not chunked:
        return body, list(range(1, len(body) + 1))
    wire, after = bytearray(), []
    for start in range(0, len(body), 5):
        piece = body[start : start + 5]
        wire += b"%x%s\r\n" % (len(piece), b";x=y" if start % 3 else b"")
        for byte in piece:
            wire.append(byte)
            after.append(len(wire))
        wire += b"\r\n"
    return bytes(wire), after


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "plain"])
async def test_parses_counts_and_resumes(
    core: csub.Core, start_server: Start, chunked: bool
) -> None:
    server = await start_server(chunked)
    core.add("127.0.0.1", server.port, [("127.0.0.2", PATH, [CHANNEL])])
    connected = await asyncio.to_thread(core.connect, 10, 5.0)
    assert (connected["held"], connected["failed"]) == (1, 0)
    head, peer, writer = await server.next()
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
    ).encode()
    assert head == request + b"\r\n"
    assert peer == "127.0.0.2"  # the source address was bound

    script = blocks(time.time_ns())
    wire, after = encode(b"".join(block for block, _ in script), chunked)
    sent, offset = 0, 0
    for n, (block, seq) in enumerate(script):
        offset += len(block)
        if seq is None:
            continue
        if block.endswith(b"\r\n\r\n"):
            cut = after[offset - 2]  # the event is complete at the CR; its LF comes later
        else:
            cut = min(len(wire), after[offset - 1] + 1 + n % 4)  # a few bytes into the next
        writer.write(wire[sent:cut])
        await writer.drain()
        sent = cut
        waited = await asyncio.to_thread(core.wait, {CHANNEL: seq}, 5.0)
        assert waited["caught_up"], (seq, waited)
    writer.write(wire[sent:])
    await writer.drain()

    snap = await asyncio.to_thread(core.stats, {CHANNEL: 9})
    latencies = snap.pop("latencies")
    assert snap == {
        "events": 7,
        "unparsed": 1,
        "gaps": 2,  # 4 and 6
        "duplicates": 1,
        "errors": 0,
        "dropped": 0,
        "held": 1,
        "behind_subs": 1,
        "behind_events": 2,  # 8 and 9
    }
    assert len(latencies) == 6 * 8
    assert all(0 <= lat < 10 for lat in memoryview(latencies).cast("d"))

    # The server ends the stream: a drop. On reconnect the client resumes from id 6.
    if chunked:
        writer.write(b"0\r\n\r\n")
    writer.close()
    dropped, deadline = 0, time.monotonic() + 5
    while dropped == 0 and time.monotonic() < deadline:
        dropped += (await asyncio.to_thread(core.stats))["dropped"]
        await asyncio.sleep(0.01)
    assert dropped == 1
    reconnected = await asyncio.to_thread(core.connect, 10, 5.0)
    assert reconnected["held"] == 1
    head, _, _ = await server.next()
    assert head == request + b"Last-Event-ID: 6\r\n\r\n"


async def test_non_200_fails_after_three_attempts(core: csub.Core, start_server: Start) -> None:
    server = await start_server(False, "503 Service Unavailable")
    core.add("127.0.0.1", server.port, [("127.0.0.3", PATH, [CHANNEL])])
    connected = await asyncio.to_thread(core.connect, 10, 5.0)
    assert (connected["held"], connected["failed"]) == (0, 1)
    stats = await asyncio.to_thread(core.stats)
    assert stats["errors"] == 4  # one per refused answer and one for giving up, as Python


def test_many_channels_and_expected_counts(core: csub.Core) -> None:
    """Channel tables grow past their first size; `behind` sums over a subscriber's own
    channels only. (Nothing is connected: the counts need no server.)"""
    many = [f"c{i}" for i in range(300)]
    core.add("127.0.0.1", 9, [("127.0.0.2", PATH, many[:150]), ("127.0.0.2", PATH, many[150:])])
    expected = {c: 2 for c in many} | {f"other{i}": 5 for i in range(300)}
    snap = core.stats(expected)
    assert (snap["behind_subs"], snap["behind_events"]) == (2, 600)
    assert core.stats({"c0": 1})["behind_events"] == 1
