"""Writing results: a JSON file and a PNG plot of latency and throughput over time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def write(result: dict[str, Any], out: Path) -> Path:
    """Write `out` (JSON) and the plot next to it (same name, .png); return the plot path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    png = out.with_suffix(".png")
    plot(result, png)
    return png


def plot(result: dict[str, Any], png: Path) -> None:
    series = result.get("series", [])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    t = [p["t"] for p in series]
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        points = [(x, p[key]) for x, p in zip(t, series, strict=True) if p[key] is not None]
        if points:
            top.plot(*zip(*points, strict=True), marker=".", label=label)
    top.set_ylabel("latency (ms)")
    top.set_yscale("symlog", linthresh=1.0)
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left")
    bottom.plot(t, [p["events_per_s"] for p in series], color="tab:green", marker=".")
    bottom.set_ylabel("events/s delivered")
    bottom.set_xlabel("seconds since start")
    bottom.grid(True, alpha=0.3)
    for x, label in result.get("marks", []):
        for axis in (top, bottom):
            axis.axvline(x, color="grey", linestyle=":", linewidth=1)
        top.annotate(
            label,
            (x, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="right",
        )
    fig.suptitle(f"loadtest {result.get('scenario')}: {result.get('title', '')}")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
