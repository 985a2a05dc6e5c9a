"""What presence costs Redis: many channels, several node processes, churn.

`python -m loadtest.presence [--channels 10000] [--nodes 4] [--churn 1000] [--seconds 10]
[--reads 200] [--identified 0.0] [--subs 1000] [--announce]
[--out loadtest/results/presence.json]`

Starts a redis-server (no persistence) and, in this process, `--nodes` hubs (on embedded
brokers: only their counts matter), each with its `PresenceTracker` writing to that Redis
through `RedisPresence`, as each node process of a cluster does. A share of the streams
(`--identified`) carry a JWT `sub` (one of `--subs`): their seats are written too, with
`join`/`leave` events decided on every channel with `--announce`. Every node joins one
stream to each of `--channels` channels (the load), then for `--seconds` seconds makes
`--churn` changes a second (a stream joins or leaves a random channel), then stays quiet
for `--seconds` seconds (liveness only). Per phase it reports Redis's commands per second
by command (`INFO commandstats`), its CPU per second (`used_cpu_sys` + `used_cpu_user`),
and bytes in and out per second (`INFO stats`); then memory (`used_memory` over the empty
server's, per channel, and `MEMORY USAGE` of one channel's hash), and the latency of
`--reads` presence reads of 10 channels each (what `GET /presence` does). Loopback only;
the server stops at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from broadcaster.brokers.memory import MemoryBroker
from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.brokers.redis.presence import RedisPresence
from broadcaster.cluster.processes import free_port, redis_argv, spawn, stop, wait_for_redis
from broadcaster.core.identity import Identity
from broadcaster.delivery.hub import Hub
from broadcaster.delivery.presence import PresenceTracker
from broadcaster.delivery.stream import Stream


class NullTransport(asyncio.Transport):
    """A transport nothing is written to (streams here only join and leave)."""


async def snapshot(client: aioredis.Redis) -> dict[str, Any]:
    """Commands by name, CPU seconds, network bytes, memory: now."""
    stats = await client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    cpu = await client.info("cpu")
    net = await client.info("stats")
    memory = await client.info("memory")
    return {
        "calls": calls,
        "cpu": cpu["used_cpu_sys"] + cpu["used_cpu_user"],
        "in": net["total_net_input_bytes"],
        "out": net["total_net_output_bytes"],
        "memory": memory["used_memory"],
        "time": time.monotonic(),
    }


def rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What Redis did per second between two snapshots."""
    seconds = after["time"] - before["time"]
    calls = {
        name: round((count - before["calls"].get(name, 0)) / seconds, 1)
        for name, count in sorted(after["calls"].items())
        if name not in ("info", "memory|usage") and count != before["calls"].get(name, 0)
    }
    return {
        "seconds": round(seconds, 2),
        "commands_per_s": calls,
        "total_commands_per_s": round(sum(calls.values()), 1),
        "redis_cpu_ms_per_s": round((after["cpu"] - before["cpu"]) * 1000 / seconds, 2),
        "bytes_in_per_s": round((after["in"] - before["in"]) / seconds),
        "bytes_out_per_s": round((after["out"] - before["out"]) / seconds),
    }


def identity_of(rng: random.Random, args: argparse.Namespace) -> Identity | None:
    """A stream's identity: one of `--subs`, for an `--identified` share of them."""
    if args.identified and rng.random() < args.identified:
        return Identity(f"user-{rng.randrange(args.subs)}", '{"name":"a user"}')
    return None


def joined(
    hub: Hub, streams: list[Stream], channel: str, identity: Identity | None
) -> asyncio.Future[None]:
    """A stream of `channel` (who is `identity`) joins `hub`."""
    stream = hub.open(
        NullTransport(), [channel], max_pending_bytes=1, release=lambda: None, identity=identity
    )
    streams.append(stream)
    return asyncio.ensure_future(hub.join(stream))


async def measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    admin = aioredis.Redis.from_url(url)
    empty = await snapshot(admin)
    channels = [f"room:{n}" for n in range(args.channels)]
    rng = random.Random(1)
    nodes: list[tuple[MemoryBroker, Hub, PresenceTracker, list[Stream]]] = []
    for n in range(args.nodes):
        broker = MemoryBroker()
        hub = Hub(broker, heartbeat_interval=3600)
        await broker.start(hub.deliver)
        client = aioredis.Redis.from_url(url)
        announces = (lambda channel: True) if args.announce else None
        store = RedisPresence(client, KeySpace("sse:"), f"node-{n}:1", announces=announces)
        tracker = PresenceTracker(hub, store)
        await tracker.start()
        nodes.append((broker, hub, tracker, []))

    def join(hub: Hub, streams: list[Stream], channel: str) -> asyncio.Future[None]:
        return joined(hub, streams, channel, identity_of(rng, args))

    loaded_at = await snapshot(admin)
    for _, hub, _, streams in nodes:
        await asyncio.gather(*(join(hub, streams, channel) for channel in channels))
    for _ in range(600):  # (a minute at most for every hash to be there)
        if await admin.dbsize() >= args.channels:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(2 * args.interval)  # (every node's first batch is in)
    churn_at = await snapshot(admin)
    per_tick = max(1, round(args.churn / 10))
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        for _, hub, _, streams in nodes:
            for _ in range(per_tick):
                if streams and rng.random() < 0.5:
                    hub.leave(streams.pop(rng.randrange(len(streams))))
                else:
                    join(hub, streams, rng.choice(channels))
        await asyncio.sleep(0.1)
    await asyncio.sleep(2 * args.interval)
    quiet_at = await snapshot(admin)
    await asyncio.sleep(args.seconds)
    done = await snapshot(admin)
    reader = nodes[0][2]
    latencies = []
    for _ in range(args.reads):
        asked = rng.sample(channels, 10)
        started = time.perf_counter()
        await reader.counts(asked)
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    truth = sum(hub.local_count(channels[0]) for _, hub, _, _ in nodes)
    assert (await reader.counts(channels[:1])) == {channels[0]: truth}
    sample = await admin.memory_usage(KeySpace("sse:").presence(channels[0]))
    for broker, _, tracker, _ in nodes:
        await tracker.stop()
        await broker.close()
    await admin.aclose()
    memory = done["memory"] - empty["memory"]
    return {
        "channels": args.channels,
        "nodes": args.nodes,
        "churn_per_node_per_s": args.churn,
        "identified": args.identified,
        "announce": args.announce,
        "load": rates(loaded_at, churn_at),
        "churn": rates(churn_at, quiet_at),
        "quiet": rates(quiet_at, done),
        "memory_bytes": memory,
        "memory_per_channel": round(memory / args.channels),
        "memory_usage_of_one_hash": sample,
        "read_10_channels_ms": {
            "p50": round(latencies[len(latencies) // 2], 3),
            "p99": round(latencies[int(len(latencies) * 0.99)], 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.presence")
    parser.add_argument("--channels", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--churn", type=int, default=1000, help="changes per node per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument(
        "--identified", type=float, default=0.0, help="share of streams with a JWT sub"
    )
    parser.add_argument("--subs", type=int, default=1000, help="distinct subs among them")
    parser.add_argument(
        "--announce", action="store_true", help="join/leave events on every channel"
    )
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/presence.json"))
    args = parser.parse_args()
    args.interval = 1.0
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        server = spawn(redis_argv(port, Path(workdir)))
        try:
            wait_for_redis(port, process=server)
            result = asyncio.run(measure(args, f"redis://127.0.0.1:{port}"))
        finally:
            stop(server)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
