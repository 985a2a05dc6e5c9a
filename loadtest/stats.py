"""Counters one worker keeps, and the percentile maths the orchestrator does on them."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass
class WorkerStats:
    """What every connection of one worker process adds to; drained once a second."""

    events: int = 0
    unparsed: int = 0
    gaps: int = 0
    duplicates: int = 0
    errors: int = 0
    dropped: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))

    def drain(self) -> dict[str, Any]:
        """The counts since the last drain; the latencies travel as raw bytes."""
        snap = {
            "events": self.events,
            "unparsed": self.unparsed,
            "gaps": self.gaps,
            "duplicates": self.duplicates,
            "errors": self.errors,
            "dropped": self.dropped,
            "latencies": self.latencies.tobytes(),
        }
        self.events = self.unparsed = self.gaps = self.duplicates = self.errors = self.dropped = 0
        self.latencies = array("d")
        return snap


def latencies_of(raw: bytes) -> np.ndarray:
    """Seconds, as sent by `WorkerStats.drain`."""
    return np.frombuffer(raw, dtype=np.float64)


def summarize_ms(latencies: np.ndarray) -> dict[str, float | None]:
    """p50/p90/p99/max in milliseconds (None when there is nothing to summarize)."""
    if latencies.size == 0:
        empty: dict[str, float | None] = {f"p{p}": None for p in PERCENTILES}
        return empty | {"max": None}
    values = np.percentile(latencies, PERCENTILES) * 1000.0
    out: dict[str, float | None] = {
        f"p{p}": round(float(v), 2) for p, v in zip(PERCENTILES, values, strict=True)
    }
    out["max"] = round(float(latencies.max()) * 1000.0, 2)
    return out
