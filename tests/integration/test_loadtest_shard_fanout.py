"""`python -m loadtest.shard_fanout`, small: nodes on a Redis Cluster of 1 and of 3
shards deliver every durable publish of one channel per shard to every subscriber."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_every_publish_on_every_shard_reaches_every_subscriber(tmp_path: Path) -> None:
    out = tmp_path / "shard_fanout.json"
    argv = [sys.executable, "-m", "loadtest.shard_fanout", "--shards", "1,3", "--nodes", "2"]
    argv += ["--subscribers", "10", "--rate", "5", "--seconds", "1", "--out", str(out)]
    # A subprocess: the tool starts and stops its own Redis servers and nodes.
    subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=180, check=True)
    runs = json.loads(out.read_text())["runs"]
    assert [run["shards"] for run in runs] == [1, 3]
    for run in runs:
        shards, step = run["shards"], run["step"]
        assert run["connect"] == run["connect"] | {"held": 10 * shards, "failed": 0}
        assert len(set(run["channels"].values())) == shards  # one channel per shard
        assert step["publisher"]["published"] == 5 * shards and step["publisher"]["errors"] == 0
        assert step["expected_deliveries"] == 5 * 10 * shards
        assert step["delivered_events"] == step["expected_deliveries"]
        assert (step["gaps"], step["duplicates"], step["undelivered_after_drain"]) == (0, 0, 0)
        # Each shard ran the durable publishes of its own channel (and those alone).
        assert [shard["fcalls"] for shard in run["per_shard"].values()] == [5] * shards
