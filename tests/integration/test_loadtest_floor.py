"""`python -m loadtest.floor` measures loopback writes end to end and reports them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_floor_tool_writes_every_round_and_reports_its_cost() -> None:
    # A subprocess: the tool pins the process it runs in.
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.floor", "--connections", "50", "--rounds", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["connections"] == 50 and report["rounds"] == 3
    assert report["bytes_per_write"] == 120
    assert 0 < report["round_ms_min"] <= report["round_ms_median"]
    assert report["write_us_median"] > 0 and report["writes_per_second"] > 0
