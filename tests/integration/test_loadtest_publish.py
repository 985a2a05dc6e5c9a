"""`python -m loadtest publish`, small: every case publishes, and Redis holds what each
said it published (its histories' entries, read back from Redis by the tool after the
case), and the streamed answers come back as the source's text. No timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.publish import ALL

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_every_case_publishes_what_it_says(tmp_path: Path) -> None:
    out = tmp_path / "publish.json"
    argv = [sys.executable, "-m", "loadtest", "publish", "--seconds", "0.3", "--warmup", "0.1"]
    argv += ["--channels", "20", "--stream-seconds", "0.4", "--answers", "2", "--out", str(out)]
    # A subprocess: the tool pins the process it runs in, and starts its own Redis and node.
    subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=180, check=True)
    report = json.loads(out.read_text())
    cases = {case["case"]: case for case in report["cases"]}
    assert list(cases) == [case.name for case in ALL]
    for name, case in cases.items():
        assert "error" not in case, name
        assert case["messages"] > 0, name
        assert case["published"] >= case["messages"], name
        # What the case counted as published is in Redis: every entry, on every channel
        # (20 channels, at most 1,000 kept on each: the faster cases fill some up).
        assert case["history_entries"] == case["expected_in_history"] > 0, name
        assert case["calls"] > 0, name
    # The raw cases send one FCALL per message, in step with the meter; the yardstick XADDs.
    for name in ("fcall-10", "fcall-100", "fcall-key-100", "xadd", "xadd-end"):
        assert cases[name]["calls"] == cases[name]["messages"], name
    for name in ("stream", "stream-coalesce"):
        stream = cases[name]
        tokens = stream["tokens_per_answer"]
        assert tokens == 200 and stream["answers"] == 2
        assert stream["same_text"] is True
        assert [done["chunks"] for done in stream["done"]] == [tokens, tokens]
    # Without coalescing every token is an event; with it, each event holds several.
    assert cases["stream"]["events_per_answer"] == [200, 200]
    assert all(0 < n < 200 for n in cases["stream-coalesce"]["events_per_answer"])
    assert (
        cases["stream-coalesce"]["done"][0]["events"]
        == cases["stream-coalesce"]["events_per_answer"][0]
    )


def test_variants_of_the_library_run_side_by_side(tmp_path: Path) -> None:
    source = ROOT / "broadcaster" / "brokers" / "redis" / "library.lua"
    files = [tmp_path / "one.lua", tmp_path / "two.lua"]
    for path in files:
        path.write_text(source.read_text("utf-8"), "utf-8")
    argv = [sys.executable, "-m", "loadtest.publish.variants", *map(str, files)]
    argv += ["--rounds", "1", "--seconds", "0.1"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [(row[0], row[1]) for row in rows] == [
        (case, tag)
        for case in ("single", "single-key", "batch-key", "batch-nokey")
        for tag in ("one", "two")
    ]
    assert all("xadd" in row and float(row[3]) > 0 for row in rows)
