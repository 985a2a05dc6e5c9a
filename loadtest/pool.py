"""The orchestrator's side of the worker processes: spread subscribers, gather replies."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from . import csub
from .worker import Spec, run_worker

PER_SOURCE = 10_000  # connections per source address, well inside the ephemeral port range


def source_address(index: int) -> str:
    """127.0.0.2 for the first PER_SOURCE connections, then 127.0.0.3, ..."""
    n = 2 + index // PER_SOURCE
    if n > 254:
        raise ValueError("too many connections for 127.0.0.2-254")
    return f"127.0.0.{n}"


class WorkerPool:
    """Worker processes, started in the constructor and stopped by `close`.

    `client` "c" runs each worker's subscribers in a csub process (built here, once),
    "python" in the worker's own event loop.
    """

    def __init__(self, count: int, cores: list[int] | None = None, client: str = "python") -> None:
        ctx = mp.get_context("spawn")
        binary = str(csub.build()) if client == "c" else None
        self.conns: list[Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        for _ in range(count):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=run_worker, args=(theirs, cores, binary), daemon=True)
            proc.start()
            self.conns.append(mine)
            self.procs.append(proc)
        self.executor = ThreadPoolExecutor(max_workers=count)

    def pids(self) -> list[int]:
        """The workers and their children (the csub processes), for CPU accounting."""
        pids = [p.pid for p in self.procs if p.pid is not None]
        for pid in list(pids):
            for task in Path(f"/proc/{pid}/task").glob("*/children"):
                with contextlib.suppress(OSError):  # the worker may be gone
                    pids += [int(c) for c in task.read_text().split()]
        return pids

    async def call(self, command: str, args: list[dict[str, Any]] | dict[str, Any]) -> list[Any]:
        """Send `command` to every worker (same args, or one dict each) and await all replies."""
        each = args if isinstance(args, list) else [args] * len(self.conns)
        for conn, arg in zip(self.conns, each, strict=True):
            conn.send((command, arg))
        loop = asyncio.get_running_loop()
        return list(
            await asyncio.gather(*(loop.run_in_executor(self.executor, c.recv) for c in self.conns))
        )

    async def open(
        self, url: str, channels_of: list[list[str]], concurrency: int = 200, timeout: float = 10
    ) -> dict[str, Any]:
        """Open one subscriber per entry of `channels_of`, round-robin over the workers."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        kept = [(k, v) for k, v in parse_qsl(parts.query) if k != "channel"]
        specs: list[list[Spec]] = [[] for _ in self.conns]
        for i, channels in enumerate(channels_of):
            query = urlencode(kept + [("channel", c) for c in channels])
            specs[i % len(specs)].append((source_address(i), f"{parts.path}?{query}", channels))
        replies = await self.call(
            "open",
            [
                {
                    "host": host,
                    "port": port,
                    "specs": s,
                    "concurrency": concurrency,
                    "timeout": timeout,
                }
                for s in specs
            ],
        )
        return merge(replies)

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs, strict=True):
            try:
                conn.send(("stop", {}))
                if conn.poll(5):
                    conn.recv()
            except (OSError, EOFError):
                pass
            proc.join(timeout=2)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2)
        self.executor.shutdown(wait=False, cancel_futures=True)


def merge(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum counts; take the max of times (seconds, at); AND the booleans."""
    out: dict[str, Any] = {}
    for reply in replies:
        for key, value in reply.items():
            if isinstance(value, bool):
                out[key] = out.get(key, True) and value
            elif key in ("seconds", "at"):
                out[key] = max(out.get(key, value), value)
            elif isinstance(value, (int, float)):
                out[key] = out.get(key, 0) + value
    return out
