"""The scenarios: each opens subscribers, publishes, and returns its figures."""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

from broadcaster.cluster.processes import rss_kb

from .measure import Recorder, run_step
from .pool import WorkerPool, merge
from .publisher import Publisher
from .target import Target


@dataclass
class Run:
    args: argparse.Namespace
    target: Target
    pool: WorkerPool
    rec: Recorder

    def publisher(self, path: str | None = None) -> Publisher:
        return Publisher(
            path or self.args.publish,
            http_url=self.target.publish_url,
            token=self.target.token,
            redis_url=self.target.redis_url,
            size=self.args.size,
        )

    async def open(self, channels_of: list[list[str]]) -> dict[str, Any]:
        """Connect the subscribers and note the node's RSS before and after."""
        before = rss_kb(self.target.node_pid)
        started = time.time()
        opened = await self.pool.open(
            self.target.url,
            channels_of,
            concurrency=self.args.connect_concurrency,
            timeout=self.args.connect_timeout,
        )
        await asyncio.sleep(1.0)  # let the node settle before reading its memory
        after = rss_kb(self.target.node_pid)
        self.rec.mark(f"{opened['held']} connected")
        held = opened["held"]
        return {
            "requested": len(channels_of),
            "held": held,
            "failed": opened["failed"],
            "connect_seconds": round(time.time() - started - 1.0, 2),
            "node_connections_gauge": self.target.connections(),
            "node_rss_kb_before": before,
            "node_rss_kb_after": after,
            "rss_kb_per_connection": round((after - before) / held, 2)
            if before is not None and after is not None and held
            else None,
        }


def per_channel(channels_of: list[list[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for channels in channels_of:
        for channel in channels:
            counts[channel] = counts.get(channel, 0) + 1
    return counts


async def broadcast(run: Run) -> dict[str, Any]:
    """Many subscribers on one channel; one step per publish rate."""
    channel = run.target.channel
    channels_of = [[channel]] * run.args.clients
    connect = await run.open(channels_of)
    steps = []
    async with run.publisher() as publisher:
        for rate in run.args.rates:
            run.rec.mark(f"{rate} msg/s")
            steps.append(
                await run_step(
                    run.rec,
                    publisher,
                    [channel],
                    rate,
                    run.args.duration,
                    subscribers_per_channel=per_channel(channels_of),
                    drain=run.args.drain,
                )
            )
    return {"connect": connect, "steps": steps}


async def streams(run: Run) -> dict[str, Any]:
    """LLM-chat shape: one subscriber per channel, `rate` messages/s on every channel."""
    channels = [f"{run.target.channel}-{i}" for i in range(run.args.channels)]
    channels_of = [[c] for c in channels]
    connect = await run.open(channels_of)
    run.rec.mark(f"{run.args.rate}/s x {len(channels)} ch")
    async with run.publisher() as publisher:
        step = await run_step(
            run.rec,
            publisher,
            channels,
            run.args.rate * len(channels),
            run.args.duration,
            subscribers_per_channel=per_channel(channels_of),
            drain=run.args.drain,
        )
    step["rate_msgs_per_s_per_channel"] = run.args.rate
    return {"connect": connect, "steps": [step]}


async def idle(run: Run) -> dict[str, Any]:
    """Idle connections: how many are held, and what each costs the node."""
    connect = await run.open([[run.target.channel]] * run.args.clients)
    deadline = time.time() + run.args.duration
    while time.time() < deadline:
        await asyncio.sleep(1.0)
        snap, _ = await run.rec.sample()
    snap, _ = await run.rec.sample()
    return {
        "connect": connect,
        "held_at_end": snap["held"],
        "dropped": snap["dropped"],
        "node_rss_kb_at_end": rss_kb(run.target.node_pid),
        "node_connections_gauge_at_end": run.target.connections(),
    }


async def reconnect(run: Run) -> dict[str, Any]:
    """Subscribers drop, miss `events`, then all come back at once with Last-Event-ID."""
    args, pool, rec = run.args, run.pool, run.rec
    channel = run.target.channel
    channels_of = [[channel]] * args.clients
    connect = await run.open(channels_of)
    # Our node takes the missed events through Redis while it is down. Nchan takes
    # publishes only through nginx, so it comes back first and gets them over HTTP;
    # either way they are stored in Redis before the subscribers return.
    publish_while_down = args.restart and run.target.server != "nchan"
    path = "redis" if publish_while_down else args.publish
    async with run.publisher(path) as publisher:
        rec.mark("warm-up")
        warm = await run_step(
            rec, publisher, [channel], 10, 0.5, subscribers_per_channel=per_channel(channels_of)
        )
        rec.mark("disconnect")
        if args.restart:
            assert run.target.node is not None
            run.target.node.stop()
            await asyncio.sleep(0.5)
        held_after_drop = sum(await pool.call("disconnect", {}))
        if args.restart and not publish_while_down:
            await asyncio.to_thread(run.target.restart_node)
        missed = await publisher.run([channel], args.missed_rate, args.events / args.missed_rate)
        if publish_while_down:
            await asyncio.to_thread(run.target.restart_node)
        expected = {channel: publisher.published[channel]}
        await rec.sample()  # clean counters before the storm
        rec.mark("reconnect")
        started = time.time()
        reconnected = merge(
            await pool.call(
                "reconnect", {"concurrency": args.reconnect_concurrency, "timeout": 15.0}
            )
        )
        waited = merge(await pool.call("wait", {"expected": expected, "timeout": args.drain}))
        snap, _lat = await rec.sample(expected)
    return {
        "connect": connect,
        "warm_up": {"gaps": warm["gaps"], "duplicates": warm["duplicates"]},
        "mode": "node restart" if args.restart else "client disconnect",
        "held_after_disconnect": held_after_drop,
        "missed_published": missed,
        "reconnected": reconnected["held"],
        "reconnect_failed": reconnected["failed"],
        "seconds_to_reconnect_all": round(reconnected["seconds"], 3),
        "all_caught_up": waited["caught_up"],
        "seconds_to_catch_up": round(waited["at"] - started, 3),
        "behind_subs": waited["behind_subs"],
        "behind_events": waited["behind_events"],
        "events_after_reconnect": snap["events"],
        "gaps": snap["gaps"],
        "duplicates": snap["duplicates"],
        "dropped": snap["dropped"],
    }


SCENARIOS = {"broadcast": broadcast, "streams": streams, "idle": idle, "reconnect": reconnect}
