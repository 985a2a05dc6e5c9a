"""One SSE subscriber: a minimal HTTP/1.1 GET, a chunked decoder and an incremental parser.

A subscriber is its own asyncio Protocol, so a reconnect reuses it and keeps what it has
seen: the last event id (sent back as Last-Event-ID) and the last sequence per channel.
Event data is expected as "<seq> <publish time ns> <channel>[ padding]" (see publisher.py);
other data is counted as `unparsed`.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from .stats import WorkerStats

MAX_HEAD = 65536


class Subscriber(asyncio.Protocol):
    """An SSE connection that checks order and latency of what it receives."""

    def __init__(  # noqa: PLR0917
        self, stats: WorkerStats, host: str, port: int, path: str, source: str, channels: list[str]
    ) -> None:
        self.stats = stats
        self.host, self.port, self.path, self.source = host, port, path, source
        self.channels = [c.encode() for c in channels]
        self.last_id: bytes | None = None
        self.last_seq: dict[bytes, int] = {}
        self.connected = False
        self.transport: asyncio.Transport | None = None
        self._ready: asyncio.Future[bool] | None = None
        self._closing = False
        self._head: bytes | None = b""
        self._chunked = False
        self._raw = b""
        self._left = 0  # bytes left in the current chunk
        self._crlf = False  # a chunk's trailing CRLF is still to come
        self._sse = b""

    async def connect(self, timeout: float) -> bool:
        """Open the stream; True once a 200 answer's headers have arrived."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._closing = False
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: self, self.host, self.port, local_addr=(self.source, 0)
                ),
                timeout,
            )
            return await asyncio.wait_for(self._ready, timeout)
        except (TimeoutError, OSError):
            self.close()
            return False

    def close(self) -> None:
        """Hang up on purpose (not counted as a drop)."""
        self._closing = True
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self.connected = False

    def behind(self, expected: dict[bytes, int]) -> int:
        """How many of the expected events of my channels I have not seen yet."""
        last = self.last_seq
        return sum(max(0, expected.get(ch, 0) - last.get(ch, 0)) for ch in self.channels)

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        self._head, self._raw, self._sse, self._left, self._crlf = b"", b"", b"", 0, False
        resume = b"Last-Event-ID: " + self.last_id + b"\r\n" if self.last_id else b""
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n".encode()
            + resume
            + b"\r\n"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connected and not self._closing:
            self.stats.dropped += 1
        self.connected = False
        self.transport = None
        self._settle(False)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self._head is not None:
            head = self._head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self._head = head
                if len(head) > MAX_HEAD:
                    self._fail()
                return
            self._head = None
            status = head[: head.find(b"\r\n")].split(b" ", 2)
            if len(status) < 2 or status[1] != b"200":
                self._fail()
                return
            self._chunked = b"transfer-encoding: chunked" in head[:end].lower()
            self.connected = True
            self._settle(True)
            data = head[end + 4 :]
        if self._chunked:
            data = self._dechunk(data)
        if data:
            self._parse(data, now)

    # -- decoding ---------------------------------------------------------------------

    def _settle(self, ok: bool) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(ok)

    def _fail(self) -> None:
        self.stats.errors += 1
        self._settle(False)
        self.close()

    def _dechunk(self, data: bytes) -> bytes:
        buf = self._raw + data if self._raw else data
        pos, size, out = 0, len(buf), []
        while pos < size:
            if self._left:
                take = min(self._left, size - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                self._crlf = self._left == 0
            elif self._crlf:
                if size - pos < 2:
                    break
                pos += 2
                self._crlf = False
            else:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    break
                length = int(buf[pos:nl].split(b";", 1)[0], 16)
                pos = nl + 2
                if length == 0:  # last chunk: the server ended the stream
                    break
                self._left = length
        self._raw = buf[pos:]
        return out[0] if len(out) == 1 else b"".join(out)

    def _parse(self, data: bytes, now: float) -> None:
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        buf = self._sse + data if self._sse else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._sse = buf
            return
        self._sse = buf[end + 2 :]
        stats = self.stats
        for block in buf[:end].split(b"\n\n"):
            if not block or block[0] == 58:  # ':' heartbeat or comment
                continue
            payload = None
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    value = line[6:] if line[5:6] == b" " else line[5:]
                    payload = value if payload is None else payload + b"\n" + value
                elif line.startswith(b"id:"):
                    self.last_id = line[4:] if line[3:4] == b" " else line[3:]
            if payload is None:
                continue
            stats.events += 1
            try:
                seq_text, ts_text, channel = payload.split(b" ", 3)[:3]
                seq, ts = int(seq_text), int(ts_text)
            except ValueError:
                stats.unparsed += 1
                continue
            stats.latencies.append(now - ts * 1e-9)
            last = self.last_seq.get(channel, 0)
            if seq > last:
                stats.gaps += seq - last - 1
                self.last_seq[channel] = seq
            else:
                stats.duplicates += 1
