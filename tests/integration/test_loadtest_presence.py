"""`python -m loadtest.presence`, small: it runs, and what it reports adds up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_presence_costs_are_measured(tmp_path: Path) -> None:
    out = tmp_path / "presence.json"
    argv = [sys.executable, "-m", "loadtest.presence", "--channels", "200", "--nodes", "2"]
    argv += ["--churn", "50", "--seconds", "1", "--reads", "10", "--out", str(out)]
    # A subprocess: the tool starts and stops its own redis-server.
    subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=120, check=True)
    result = json.loads(out.read_text())
    load = result["load"]["commands_per_s"]
    assert load["hset"] * result["load"]["seconds"] == pytest.approx(400, abs=2)
    assert set(result["quiet"]["commands_per_s"]) == {"set"}  # liveness only, no rewrites
    assert result["memory_usage_of_one_hash"] > 0
