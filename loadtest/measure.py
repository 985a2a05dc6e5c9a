"""Sampling the workers once a second while publishing, and summing up a step."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any

import numpy as np

from .node import cpu_seconds
from .pool import WorkerPool, merge
from .publisher import Publisher
from .stats import latencies_of, summarize_ms

COUNTS = ("events", "unparsed", "gaps", "duplicates", "errors", "dropped")


class Recorder:
    """Keeps a per-second time series: events/s, latency p50/p99, connections held."""

    def __init__(self, pool: WorkerPool, node_pid: int | None = None) -> None:
        self.pool = pool
        self.node_pid = node_pid
        self.t0 = time.time()
        self.last = self.t0
        self.series: list[dict[str, Any]] = []
        self._events = 0
        self._lat: list[np.ndarray] = []
        self.marks: list[tuple[float, str]] = []

    def mark(self, label: str) -> None:
        self.marks.append((round(time.time() - self.t0, 2), label))

    def cpu(self) -> tuple[float, float, float]:
        """(wall time, node CPU s, generator CPU s: workers + this process)."""
        workers: list[int | None] = [*self.pool.pids(), os.getpid()]
        return time.time(), cpu_seconds([self.node_pid]), cpu_seconds(workers)

    async def sample(
        self, expected: dict[str, int] | None = None
    ) -> tuple[dict[str, Any], np.ndarray]:
        args = {"expected": expected} if expected is not None else {}
        replies = await self.pool.call("stats", args)
        lat = np.concatenate([latencies_of(r.pop("latencies")) for r in replies])
        snap = merge(replies)
        now = time.time()
        self._events += snap.get("events", 0)
        self._lat.append(lat)
        span = now - self.last
        if span >= 0.5:  # shorter spans would make a noisy rate; carry them to the next point
            window = np.concatenate(self._lat)
            ms = summarize_ms(window)
            self.series.append(
                {
                    "t": round(now - self.t0, 2),
                    "events_per_s": round(self._events / span, 1),
                    "p50_ms": ms["p50"],
                    "p99_ms": ms["p99"],
                    "held": snap.get("held", 0),
                }
            )
            self.last, self._events, self._lat = now, 0, []
        return snap, lat


async def run_step(
    rec: Recorder,
    publisher: Publisher,
    channels: list[str],
    rate: float,
    duration: float,
    *,
    subscribers_per_channel: dict[str, int],
    drain: float = 10.0,
) -> dict[str, Any]:
    """Publish `rate` msgs/s over `channels` for `duration` s; then wait for the stragglers."""
    await rec.sample()  # start the step with clean counters
    start = time.time()
    cpu_before = rec.cpu()
    before = {c: publisher.published[c] for c in channels}
    task = asyncio.create_task(publisher.run(channels, rate, duration))
    totals: Counter[str] = Counter()
    chunks: list[np.ndarray] = []
    tick = start
    while not task.done():
        tick += 1.0
        await asyncio.wait({task}, timeout=max(0.0, tick - time.time()))
        if time.time() >= tick or task.done():
            snap, lat = await rec.sample()
            totals.update({k: snap.get(k, 0) for k in COUNTS})
            chunks.append(lat)
    published = task.result()
    expected = {c: publisher.published[c] for c in channels}
    deadline = time.time() + drain
    while True:
        snap, lat = await rec.sample(expected)
        totals.update({k: snap.get(k, 0) for k in COUNTS})
        chunks.append(lat)
        if snap["behind_subs"] == 0 or time.time() >= deadline:
            break
        await asyncio.sleep(0.25)
    end = time.time()
    cpu_after = rec.cpu()
    wall = cpu_after[0] - cpu_before[0]
    offered = sum((expected[c] - before[c]) * subscribers_per_channel.get(c, 0) for c in channels)
    lat_all = np.concatenate(chunks) if chunks else np.empty(0)
    return {
        "rate_msgs_per_s": rate,
        "publisher": published,
        "expected_deliveries": offered,
        "offered_events_per_s": round(offered / duration, 1),
        "delivered_events": totals["events"],
        "delivered_events_per_s": round(totals["events"] / (end - start), 1),
        "seconds_to_deliver_all": round(end - start, 2),
        "latency_ms": summarize_ms(lat_all),
        "gaps": totals["gaps"],
        "duplicates": totals["duplicates"],
        "undelivered_after_drain": snap["behind_events"],
        "subscribers_behind_after_drain": snap["behind_subs"],
        "dropped_connections": totals["dropped"],
        "unparsed": totals["unparsed"],
        "held_at_end": snap.get("held", 0),
        "node_cpu_pct": round(100 * (cpu_after[1] - cpu_before[1]) / wall, 1),
        "generator_cpu_pct": round(100 * (cpu_after[2] - cpu_before[2]) / wall, 1),
    }
