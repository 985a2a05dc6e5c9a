"""The subscriber core's own ceiling: how many events/s it reads when the server is no limit.

`python -m loadtest.ceiling --client c|python [--clients 1000] [--events 100] [--seconds 5]`

A blaster process (pinned to core 0) writes pre-built chunks of node-like events,
"id: <ms>-<seq>" + "data: <seq> <time ns> bench", `--events` per chunk and one chunk per
write, to every connection as fast as it takes them. The subscribers (on the other
cores) count, time and check the events as in a real run; what they read per second,
and the CPU that costs, is the ceiling of the client, not of any server. (With the
Python client, keep --clients small: a flooded worker answers commands only between
loop turns, which then take seconds.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import time
from collections import deque
from typing import Any, cast

import uvloop

from broadcaster.cluster.processes import free_port, wait_for_port

from .csub import default_client
from .measure import COUNTS, Recorder
from .pool import WorkerPool

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
HIGH_WATER = 1 << 16  # bytes queued (beyond the kernel's) before a connection waits


class Blasted(asyncio.Protocol):
    """One subscriber's connection: answers its GET, then takes chunk after chunk."""

    def __init__(self, blaster: Blaster) -> None:
        self.blaster = blaster
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.next = 0  # the next chunk it gets
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.set_write_buffer_limits(HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        if self in self.blaster.streams:
            return
        self.head += data
        if b"\r\n\r\n" in self.head:
            assert self.transport is not None
            self.transport.write(HEAD)
            self.blaster.streams.add(self)
            if len(self.blaster.streams) == self.blaster.clients:
                self.blaster.all_in.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.blaster.streams.discard(self)
        self.blaster.resumed.set()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.blaster.ready.append(self)
        self.blaster.resumed.set()


class Blaster:
    """Every connection reads the same chunks in the same order, each at its own pace
    (a slow one does not hold the others up), so sequences have no gaps."""

    def __init__(self, clients: int, events_per_write: int) -> None:
        self.clients, self.per_write = clients, events_per_write
        self.streams: set[Blasted] = set()
        self.ready: deque[Blasted] = deque()  # the ones whose buffers have room
        self.resumed = asyncio.Event()
        self.all_in = asyncio.Event()
        self.chunks: dict[int, bytes] = {}  # built once, dropped once all have them

    def chunk(self, k: int) -> bytes:
        if k not in self.chunks:
            if k % 1024 == 0:  # now and then, forget what every connection has had
                slowest = min(s.next for s in self.streams)
                for old in [old for old in self.chunks if old < slowest]:
                    del self.chunks[old]
            now, ms, first = time.time_ns(), time.time_ns() // 1_000_000, k * self.per_write + 1
            body = b"".join(
                b"id: %d-%d\ndata: %d %d bench\n\n" % (ms, seq, seq, now)
                for seq in range(first, first + self.per_write)
            )
            self.chunks[k] = b"%x\r\n%s\r\n" % (len(body), body)
        return self.chunks[k]

    async def run(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: Blasted(self), "127.0.0.1", port, backlog=4096)
        await self.all_in.wait()  # connecting goes faster without traffic
        self.ready.extend(self.streams)
        while self.streams:
            self.resumed.clear()
            for _ in range(len(self.ready)):  # then let resumes and hang-ups in
                stream = self.ready.popleft()
                if stream.transport is None or stream not in self.streams:
                    continue
                stream.transport.write(self.chunk(stream.next))  # may pause it
                stream.next += 1
                if not stream.paused:
                    self.ready.append(stream)
            if self.ready:
                await asyncio.sleep(0)
            else:
                await self.resumed.wait()


def blast(port: int, core: int | None, clients: int, events_per_write: int) -> None:
    """Process entry point of the blaster."""
    if core is not None:
        os.sched_setaffinity(0, [core])
    uvloop.run(Blaster(clients, events_per_write).run(port))


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0))
    server_core, generator = (cores[0], cores[1:]) if len(cores) > 1 else (None, None)
    if generator:
        os.sched_setaffinity(0, generator)
    port = free_port()
    ctx = mp.get_context("spawn")
    server = ctx.Process(
        target=blast, args=(port, server_core, args.clients, args.events), daemon=True
    )
    server.start()
    pool = WorkerPool(args.workers, generator, client=args.client)
    try:
        await asyncio.to_thread(wait_for_port, port, 10.0)
        url = f"http://127.0.0.1:{port}/events?channel=bench"
        opened = await pool.open(url, [["bench"]] * args.clients)
        rec = Recorder(pool, server.pid)
        await rec.sample()
        before = rec.cpu()
        totals = dict.fromkeys(COUNTS, 0)
        deadline = time.time() + args.seconds
        while time.time() < deadline:
            await asyncio.sleep(0.5)
            snap, _ = await rec.sample()
            totals = {k: totals[k] + snap.get(k, 0) for k in COUNTS}
        after = rec.cpu()
        wall, server_s, gen_s = (after[i] - before[i] for i in range(3))
    finally:
        server.terminate()
        server.join(5)
        pool.close()
    return {
        "client": args.client,
        "clients": args.clients,
        "held": opened["held"],
        "events_per_s": round(totals["events"] / wall),
        "generator_cpu_pct": round(100 * gen_s / wall, 1),
        "blaster_cpu_pct": round(100 * server_s / wall, 1),
        **{k: totals[k] for k in COUNTS if k != "events"},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.ceiling", description=__doc__)
    p.add_argument("--client", choices=("c", "python"))
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--workers", type=int, default=max(2, (os.cpu_count() or 2) - 1))
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--events", type=int, default=100, help="events per write")
    args = p.parse_args(argv)
    args.client = args.client or default_client()
    print(json.dumps(uvloop.run(measure(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
