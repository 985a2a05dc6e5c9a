"""A worker process: holds a share of the subscribers in its own event loop.

It obeys commands from the orchestrator over a pipe, one at a time, while its
subscribers keep receiving. Every command gets exactly one reply. With the C client the
subscribers live in a csub child process instead, and `csub.CWorker` relays the commands.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

import uvloop

from .csub import CWorker
from .sse_client import Subscriber
from .stats import WorkerStats

Spec = tuple[str, str, list[str]]  # (source address, path with query, channels)


def run_worker(conn: Connection, cores: list[int] | None, csub: str | None = None) -> None:
    """Process entry point; `csub` is the compiled C client to run the subscribers in."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides when to stop
    if cores:
        os.sched_setaffinity(0, cores)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if csub is not None:
        CWorker(conn, csub).serve()
        return
    uvloop.install()
    asyncio.run(Worker(conn).serve())


class Worker:
    """The subscribers of one process and the commands that act on them."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.stats = WorkerStats()
        self.subs: list[Subscriber] = []

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            command, args = await loop.run_in_executor(None, self.conn.recv)
            if command == "stop":
                self.cmd_disconnect()
                self.conn.send(None)
                return
            handler = getattr(self, "cmd_" + command)
            reply = handler(**args)
            if asyncio.iscoroutine(reply):
                reply = await reply
            self.conn.send(reply)

    async def _connect_all(self, concurrency: int, timeout: float) -> dict[str, Any]:
        started = time.time()
        gate = asyncio.Semaphore(concurrency)

        async def one(sub: Subscriber) -> bool:
            async with gate:
                for attempt in range(3):
                    if await sub.connect(timeout):
                        return True
                    await asyncio.sleep(0.2 * (attempt + 1))
                return False

        results = await asyncio.gather(*(one(s) for s in self.subs if not s.connected))
        failed = results.count(False)
        self.stats.errors += failed
        return {"held": self.held(), "failed": failed, "seconds": time.time() - started}

    def held(self) -> int:
        return sum(1 for s in self.subs if s.connected)

    async def cmd_open(
        self, host: str, port: int, specs: list[Spec], concurrency: int, timeout: float
    ) -> dict[str, Any]:
        self.subs += [Subscriber(self.stats, host, port, p, src, chs) for src, p, chs in specs]
        return await self._connect_all(concurrency, timeout)

    async def cmd_reconnect(self, concurrency: int, timeout: float) -> dict[str, Any]:
        return await self._connect_all(concurrency, timeout)

    def cmd_disconnect(self) -> int:
        for sub in self.subs:
            sub.close()
        return self.held()

    def cmd_stats(self, expected: dict[str, int] | None = None) -> dict[str, Any]:
        snap = self.stats.drain()
        snap["held"] = self.held()
        if expected is not None:
            want = {k.encode(): v for k, v in expected.items()}
            behind = [s.behind(want) for s in self.subs]
            snap["behind_subs"] = sum(1 for b in behind if b)
            snap["behind_events"] = sum(behind)
        return snap

    async def cmd_wait(self, expected: dict[str, int], timeout: float) -> dict[str, Any]:
        """Wait until every subscriber has seen `expected` (per channel) or time runs out."""
        want = {k.encode(): v for k, v in expected.items()}
        deadline = time.time() + timeout
        pending = list(self.subs)
        while True:
            pending = [s for s in pending if s.behind(want)]
            now = time.time()
            if not pending or now >= deadline:
                break
            await asyncio.sleep(0.01)
        return {
            "caught_up": not pending,
            "at": now,
            "behind_subs": len(pending),
            "behind_events": sum(s.behind(want) for s in pending),
        }
