"""Running a case's step over and over: a warm-up, then the measured stretch, then a stop.

A step publishes something and says how many messages it published. `Tally` counts what
the measured stretch published (for the rates) and everything, warm-up and the steps
still in flight at the stop included (to hold against what Redis kept)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .meter import Meter


@dataclass
class Tally:
    measured: int = 0
    total: int = 0


def drive_sync(step: Callable[[], int], meter: Meter, warmup: float, seconds: float) -> Tally:
    """Call `step` for `warmup` seconds, then measure `seconds` more of it."""
    tally = Tally()
    deadline = time.monotonic() + warmup
    while time.monotonic() < deadline:
        tally.total += step()
    meter.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tally.measured += step()
    meter.stop()
    tally.total += tally.measured
    return tally


def drive_threads(
    step: Callable[[], int], callers: int, meter: Meter, warmup: float, seconds: float
) -> Tally:
    """`callers` threads call `step` over and over: `warmup` seconds, then `seconds`
    measured (as `drive_async`). The first failure stops them all and is raised."""
    tally = Tally()
    lock = threading.Lock()
    stop = threading.Event()
    measuring = False
    failures: list[BaseException] = []

    def caller() -> None:
        try:
            while not stop.is_set():
                published = step()
                with lock:
                    tally.total += published
                    if measuring:
                        tally.measured += published
        except BaseException as failure:
            failures.append(failure)
            stop.set()

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
    for thread in threads:
        thread.start()
    try:
        if not stop.wait(warmup):
            meter.start()
            with lock:
                measuring = True
            stop.wait(seconds)
            meter.stop()
            with lock:
                measuring = False
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    if failures:
        raise failures[0]
    return tally


async def drive_async(
    step: Callable[[], Awaitable[int]], senders: int, meter: Meter, warmup: float, seconds: float
) -> Tally:
    """`senders` tasks call `step` over and over: `warmup` seconds, then `seconds`
    measured. What completes between `meter.start` and `meter.stop` is measured; the
    steps in flight at the stop finish and count in the total only."""
    tally = Tally()
    measuring = stopping = False

    async def sender() -> None:
        while not stopping:
            published = await step()
            tally.total += published
            if measuring:
                tally.measured += published

    tasks = [asyncio.create_task(sender()) for _ in range(senders)]
    try:
        await _sleep_unless_failed(tasks, warmup)
        meter.start()
        measuring = True
        await _sleep_unless_failed(tasks, seconds)
        meter.stop()
        measuring, stopping = False, True
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return tally


async def _sleep_unless_failed(tasks: list[asyncio.Task[None]], seconds: float) -> None:
    """Wait `seconds`; a sender that fails meanwhile raises its error here."""
    done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        task.result()
