"""Fan-out of one channel per shard, with `broadcaster serve` nodes on a Redis Cluster.

`python -m loadtest.shard_fanout [--shards 1,3] [--nodes 2] [--subscribers 1000]
[--rate 50] [--seconds 10]`

For each count of shards, starts a Redis Cluster of that many primaries as
`loadtest.shards` does (no replicas, no persistence, primary n pinned to core n modulo
the cores), one channel per primary (`{tag}fanout`, its tag in a slot of that primary),
and `--nodes` nodes on the cluster (node n pinned to core n modulo the cores). Then
`--subscribers` SSE subscribers per channel, shared evenly between the nodes (the C
client, `--workers` processes, not pinned), and a durable publisher (`RedisPublisher`,
`FCALL sse_publish` on the channel's shard) that publishes `--rate` messages/s on every
channel for `--seconds` seconds, data as `loadtest.publisher` makes it, so subscribers
measure latency from publish time to receipt and count gaps. It reports delivered
events/s in all, latency percentiles, each node's CPU and each shard's Redis CPU (from
/proc, and `cmdstat_fcall`). Loopback only; everything stops by itself (the drain is
bounded by `--drain`); the JSON goes to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import uvloop
from redis.exceptions import RedisError

from broadcaster import RedisPublisher
from broadcaster.cluster.processes import SERVE, free_port, node_env, spawn, stop, wait_for_http

from .csub import default_client
from .measure import Recorder, run_step
from .node import cpu_seconds, pinned
from .pool import WorkerPool
from .publisher import Publisher
from .shards import cluster_url, fcall_stats, redis_cluster, tag_on

TOKEN = "tok"


class ClusterPublisher(Publisher):
    """`Publisher`'s steady rate and data, published durably through `RedisPublisher` on a
    `redis+cluster://` URL: each batch is one pipeline, split by shard by redis-py."""

    def __init__(self, url: str) -> None:
        super().__init__("redis", http_url=None, token=TOKEN, redis_url=url, size=0)
        self._cluster: RedisPublisher | None = None

    async def __aenter__(self) -> ClusterPublisher:
        self._cluster = RedisPublisher.from_url(self.redis_url or "")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self._cluster is not None:
            await self._cluster.aclose()

    async def _redis_batch(self, batch: list[tuple[str, int]]) -> None:
        assert self._cluster is not None
        items = [(channel, self.data(channel, seq)) for channel, seq in batch]
        try:
            await self._cluster.publish_many(items)
        except RedisError:
            self.errors += len(batch)


@contextmanager
def nodes(count: int, url: str, workdir: Path) -> Iterator[list[tuple[str, int]]]:
    """`count` nodes on the cluster at `url`, node n pinned to core n modulo the cores:
    each one's base URL and pid. Stopped on the way out, also on errors."""
    cores = os.cpu_count() or 1
    started: list[subprocess.Popen[bytes]] = []
    out: list[tuple[str, int]] = []
    try:
        for n in range(count):
            port = free_port()
            env = node_env(
                port,
                url,
                publish_token=TOKEN,
                max_connections="100000",
                access_log="off",
                log_level="WARNING",
            )
            log = workdir / f"node{n}-{port}.log"
            started.append(spawn(pinned([*SERVE], n % cores), log=log, env=env, own_session=True))
            base = f"http://127.0.0.1:{port}"
            wait_for_http(base + "/readyz", started[-1], 30)
            out.append((base, started[-1].pid))
        yield out
    finally:
        for process in started:
            stop(process)


class Usage:
    """CPU seconds of the nodes and of each shard's Redis, and each shard's FCALLs, at one
    moment; `since` turns two of them into percentages of a core and costs per publish."""

    def __init__(self, node_pids: list[int], shards: dict[int, int]) -> None:
        self.node_pids, self.shards = node_pids, shards  # shards: port -> Redis pid
        self.wall = time.time()
        self.nodes = [cpu_seconds([pid]) for pid in node_pids]
        self.redis = {port: cpu_seconds([pid]) for port, pid in shards.items()}
        self.fcalls = {port: fcall_stats(port) for port in shards}

    def since(self, before: Usage) -> dict[str, Any]:
        wall = self.wall - before.wall
        per_shard = {}
        for port in self.shards:
            calls, usec = (
                a - b for a, b in zip(self.fcalls[port], before.fcalls[port], strict=True)
            )
            per_shard[str(port)] = {
                "redis_cpu_pct": round(100 * (self.redis[port] - before.redis[port]) / wall, 1),
                "fcalls": calls,
                "fcall_usec_per_publish": round(usec / calls, 2) if calls else None,
            }
        nodes = [
            round(100 * (a - b) / wall, 1) for a, b in zip(self.nodes, before.nodes, strict=True)
        ]
        return {"seconds": round(wall, 2), "node_cpu_pct": nodes, "per_shard": per_shard}


async def measure(
    args: argparse.Namespace,
    url: str,
    channels: list[str],
    bases: list[str],
    pool: WorkerPool,
    *,
    usage: Callable[[], Usage],
) -> dict[str, Any]:
    """Connect the subscribers, warm up for a second, then the measured step."""
    rec = Recorder(pool)
    per_node = [args.subscribers // len(bases)] * len(bases)
    per_node[0] += args.subscribers - sum(per_node)
    held, failed, started = 0, 0, time.time()
    for base, count in zip(bases, per_node, strict=True):
        channels_of = [[channel] for channel in channels for _ in range(count)]
        opened = await pool.open(f"{base}/events", channels_of, concurrency=200, timeout=10)
        held, failed = opened["held"], failed + opened["failed"]  # held: all so far
    connect = {"held": held, "failed": failed, "seconds": round(time.time() - started, 2)}
    subscribers = {channel: args.subscribers for channel in channels}
    async with ClusterPublisher(url) as publisher:
        rec.mark("warm-up")
        warm = await run_step(
            rec, publisher, channels, 5 * len(channels), 1.0,
            subscribers_per_channel=subscribers, drain=args.drain,
        )  # fmt: skip
        rec.mark(f"{args.rate} msg/s x {len(channels)} ch")
        before = usage()
        step = await run_step(
            rec, publisher, channels, args.rate * len(channels), args.seconds,
            subscribers_per_channel=subscribers, drain=args.drain,
        )  # fmt: skip
        used = usage().since(before)
    step.pop("node_cpu_pct")  # the Recorder knows no node; `used` has each one's
    step["rate_msgs_per_s_per_channel"] = args.rate
    return {
        "connect": connect,
        "warm_up": {k: warm[k] for k in ("delivered_events", "gaps", "duplicates")},
        "step": step,
        **used,
        "series": rec.series,
        "marks": rec.marks,
    }


def run(args: argparse.Namespace, shards: int, workdir: Path) -> dict[str, Any]:
    with ExitStack() as stack:
        ports, redis_processes = stack.enter_context(redis_cluster(shards, workdir))
        url = cluster_url(ports)
        channels = [f"{{{tag_on(port, ports)}}}fanout" for port in ports]
        started = stack.enter_context(nodes(args.nodes, url, workdir))
        bases, node_pids = [b for b, _ in started], [p for _, p in started]
        pool = WorkerPool(args.workers, None, client=args.client)
        stack.callback(pool.close)
        pids = {port: process.pid for port, process in zip(ports, redis_processes, strict=True)}
        figures = uvloop.run(
            measure(args, url, channels, bases, pool, usage=lambda: Usage(node_pids, pids))
        )
        return {
            "shards": shards,
            "nodes": args.nodes,
            "channels": dict(zip(map(str, ports), channels, strict=True)),
            "subscribers_per_channel": args.subscribers,
            **figures,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default="1,3", help="counts of shards to measure")
    parser.add_argument("--nodes", type=int, default=2, help="broadcaster nodes (1-4)")
    parser.add_argument("--subscribers", type=int, default=1000, help="per channel (≤ 3000)")
    parser.add_argument("--rate", type=float, default=50.0, help="msgs/s on each channel")
    parser.add_argument("--seconds", type=float, default=10.0, help="of publishing (≤ 60)")
    parser.add_argument("--drain", type=float, default=10.0, help="max s to wait for stragglers")
    parser.add_argument("--workers", type=int, default=2, help="subscriber processes")
    parser.add_argument("--client", choices=("c", "python"), help="subscriber core (default c)")
    parser.add_argument("--out", default="loadtest/results/shard_fanout.json")
    args = parser.parse_args()
    counts = [int(count) for count in args.shards.split(",")]
    # Bounds: subscribers and node sockets both count against the 20,000 fds of this
    # machine, and a run must stop by itself.
    if not (1 <= args.nodes <= 4 and 1 <= args.subscribers <= 3000 and 0 < args.seconds <= 60):
        parser.error("--nodes 1-4, --subscribers 1-3000 and --seconds up to 60")
    if args.subscribers * max(counts) > 6000 or args.rate > 1000:
        parser.error("at most 6,000 subscribers in all, and 1,000 msgs/s per channel")
    args.client = args.client or default_client()
    with tempfile.TemporaryDirectory(prefix="shard-fanout-") as workdir:
        runs = [run(args, count, Path(workdir)) for count in counts]
    options = {k: v for k, v in vars(args).items() if k != "out"}
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    text = json.dumps({**report, "options": options, "runs": runs}, indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    brief = [{k: v for k, v in r.items() if k not in ("series", "marks")} for r in runs]
    print(json.dumps(brief, indent=2))


if __name__ == "__main__":
    main()
