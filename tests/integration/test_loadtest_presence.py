"""`python -m loadtest.presence` on 10,000 channels: it runs, what it reports adds up, and
Redis's writes stay within the budget `docs/presence.md` states."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


CHANNELS, NODES, CHURN = 10_000, 2, 500


def test_presence_costs_stay_within_the_budget(tmp_path: Path) -> None:
    out = tmp_path / "presence.json"
    argv = [sys.executable, "-m", "loadtest.presence", "--channels", str(CHANNELS)]
    argv += ["--nodes", str(NODES), "--churn", str(CHURN), "--seconds", "2", "--reads", "10"]
    argv += ["--out", str(out)]
    # A subprocess: the tool starts and stops its own redis-server.
    subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=240, check=True)
    result = json.loads(out.read_text())
    load = result["load"]["commands_per_s"]
    assert load["hset"] * result["load"]["seconds"] == pytest.approx(
        CHANNELS * NODES, rel=0.005
    )  # (rounded rates)
    # Churn: two commands per changed channel per node, plus a SADD and a SREM per batch
    # (and the liveness and the sweep's reads).
    churn = result["churn"]["commands_per_s"]
    writes = sum(churn.get(name, 0) for name in ("hset", "expire", "hdel", "sadd", "srem"))
    assert 0 < writes <= 2 * CHURN * NODES + 2 * NODES
    # Quiet: the liveness SET and the sweep's SMEMBERS + MGET, every 1.7 s per node.
    quiet = result["quiet"]["commands_per_s"]
    assert set(quiet) <= {"set", "smembers", "mget"}
    assert sum(quiet.values()) <= 3 * NODES / 1.7 + 1
    assert result["memory_usage_of_one_hash"] > 0
