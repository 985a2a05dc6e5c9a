"""Durable publishes on a Redis Cluster: what one shard takes, and what three take.

`python -m loadtest.shards [--shards 1,3] [--seconds 5] [--batch 100]`

For each count of shards, starts a Redis Cluster of that many primaries (no replicas,
no persistence), each pinned to a core in turn with `taskset`, and one publisher process
per shard that publishes for `--seconds` seconds, in batches of `--batch`, with
`SyncRedisPublisher` (declared keys, one pipeline per batch), on channels whose groups
live on its shard. It reports durable publishes per second in all, and each shard's
Redis CPU per publish (`INFO commandstats`, `cmdstat_fcall`). Everything runs on
loopback and stops by itself; the JSON goes to `--out`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from broadcaster import SyncRedisPublisher
from broadcaster.cluster.processes import redis_argv, spawn, stop, wait_for_redis
from broadcaster.cluster.redis_cluster import cluster_options, cluster_port, create_cluster

PAYLOAD = "x" * 100


def channels_on(port: int, seeds: list[int], count: int = 64) -> list[str]:
    """`count` channels whose groups live on the primary at `port`."""
    with redis.Redis(port=seeds[0]) as probe:
        owners = _owners(probe)
    found: list[str] = []
    n = 0
    while len(found) < count:
        channel = f"bench{n}"
        if owners[key_slot(channel.encode())] == port:
            found.append(channel)
        n += 1
    return found


def _owners(client: redis.Redis) -> dict[int, int]:
    """The port of the primary that serves each slot."""
    owners: dict[int, int] = {}
    ranges = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
    for first, last, primary, *_ in ranges:
        for slot in range(int(first), int(last) + 1):
            owners[slot] = int(primary[1])
    return owners


def publisher(url: str, channels: list[str], seconds: float, batch: int, out: Any) -> None:
    """Publish in batches round the channels until `seconds` have passed; how many."""
    sent = 0
    with SyncRedisPublisher.from_url(url) as publish:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            items = [(channels[(sent + n) % len(channels)], PAYLOAD) for n in range(batch)]
            publish.publish_many(items)
            sent += batch
    out.put(sent)


def fcall_stats(port: int) -> tuple[int, int]:
    """FCALLs served by the server on `port`, and the microseconds they took."""
    with redis.Redis(port=port) as client:
        stats = client.info("commandstats").get("cmdstat_fcall", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def tag_on(port: int, seeds: list[int]) -> str:
    """A hash tag whose slot the primary at `port` serves (`{tag}name` lives there)."""
    with redis.Redis(port=seeds[0]) as probe:
        owners = _owners(probe)
    return next(f"t{n}" for n in range(100_000) if owners[key_slot(f"t{n}".encode())] == port)


def cluster_url(ports: list[int]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)


@contextmanager
def redis_cluster(
    shards: int, workdir: Path
) -> Iterator[tuple[list[int], list[subprocess.Popen[bytes]]]]:
    """A Redis Cluster of `shards` primaries (no replicas, no persistence), primary n
    pinned to core n modulo the cores with `taskset`: their ports and processes. They
    are stopped on the way out, also on errors."""
    ports = [cluster_port() for _ in range(shards)]
    cores = os.cpu_count() or 1
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for n, port in enumerate(ports):
            data = workdir / f"shards{shards}-{port}"
            data.mkdir()
            argv = redis_argv(port, data, *cluster_options(port))
            if shutil.which("taskset"):
                argv = ["taskset", "-c", str(n % cores), *argv]
            processes.append(spawn(argv, log=data / "redis.log"))
            wait_for_redis(port, 15, processes[-1])
        create_cluster(ports, replicas=0)
        yield ports, processes
    finally:
        for process in processes:
            stop(process)


def run(shards: int, seconds: float, batch: int, workdir: Path) -> dict[str, Any]:
    with redis_cluster(shards, workdir) as (ports, _):
        url = cluster_url(ports)
        # The library is loaded, and every shard has published once, before the clock runs.
        with SyncRedisPublisher.from_url(url) as warm:
            for port in ports:
                warm.publish(channels_on(port, ports, 1)[0], "warm")
        before = {port: fcall_stats(port) for port in ports}
        results: multiprocessing.Queue[int] = multiprocessing.Queue()
        workers = [
            multiprocessing.Process(
                target=publisher, args=(url, channels_on(port, ports), seconds, batch, results)
            )
            for port in ports
        ]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        sent = sum(results.get(timeout=seconds + 60) for _ in workers)
        for worker in workers:
            worker.join(timeout=30)
        elapsed = time.monotonic() - started
        per_shard = {}
        for port in ports:
            calls, usec = (a - b for a, b in zip(fcall_stats(port), before[port], strict=True))
            per_shard[str(port)] = {"fcalls": calls, "usec_per_publish": round(usec / calls, 2)}
        return {
            "shards": shards,
            "publishes": sent,
            "seconds": round(elapsed, 2),
            "publishes_per_second": round(sent / elapsed),
            "per_shard": per_shard,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default="1,3", help="counts of shards to measure")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--out", default="loadtest/results/shards.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shards-") as workdir:
        report = [
            run(int(count), args.seconds, args.batch, Path(workdir))
            for count in args.shards.split(",")
        ]
    text = json.dumps({"cores": os.cpu_count(), "batch": args.batch, "runs": report}, indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
