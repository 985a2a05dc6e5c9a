"""A user's first mistakes with the `broadcaster` command each get one clear line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from broadcaster.cluster.processes import settings_env
from tests.support.processes import Node, run_broadcaster
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_version_names_the_installed_release() -> None:
    done = run_broadcaster("--version")
    release = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (done.returncode, done.stdout, done.stderr) == (0, f"broadcaster {release}\n", "")


def test_a_taken_port_is_one_line_naming_its_holder() -> None:
    with socket.socket() as taken:  # held by this test's own process
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_broadcaster("serve", "--host", "127.0.0.1", "--port", str(port))
    assert done.returncode == 1
    line = done.stderr.splitlines()[-1]
    start = f"broadcaster: cannot listen on 127.0.0.1:{port}: address already in use, by pid "
    start += f"{os.getpid()} ("
    end = "); stop it or choose another --port"
    assert line.startswith(start)
    assert line.endswith(end)
    # The holder's command line (this test's own), cut to 80 characters if longer.
    shown = line.removeprefix(start).removesuffix(end)
    words = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    real = " ".join(word.decode() for word in words)
    assert shown == real or (len(shown) == 80 and real.startswith(shown.removesuffix("...")))
    assert shown.startswith(sys.executable[:77])
    assert "Traceback" not in done.stderr


def test_a_misspelt_setting_is_named_with_the_closest_one(
    start_node: Callable[..., Node],
) -> None:
    node = start_node(max_conections="5", retry_ms="1000")
    assert node.ready()
    log = node.log.read_text()
    assert (
        "BROADCASTER_MAX_CONECTIONS is not a setting (did you mean "
        "BROADCASTER_MAX_CONNECTIONS?); it is ignored" in log
    )
    assert "BROADCASTER_RETRY_MS" not in log


async def test_an_unknown_setting_does_not_stop_a_node(start_node: Callable[..., Node]) -> None:
    node = start_node(token="for-the-subscribe-command", fancy="1")
    await wait_until(node.ready, 5, "the node")
    log = node.log.read_text()
    assert "BROADCASTER_FANCY is not a setting; it is ignored" in log
    assert "BROADCASTER_TOKEN" not in log  # `broadcaster subscribe` reads it


def test_redis_shards_with_sentinel_or_without_a_shard_is_one_line_before_anything_starts(
    tmp_path: Path,
) -> None:
    # The refusal comes first: nothing is started, not even a work directory made.
    def cluster(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "broadcaster", "cluster", *flags],
            env={**settings_env(inherit=False), "TMPDIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = cluster("--redis-shards", "3", "--sentinel")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [
        "broadcaster: --redis-shards and --sentinel do not go together: a Redis Cluster "
        "promotes its replicas itself, without Sentinels; choose one"
    ]
    done = cluster("--redis-shards", "0")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [
        "broadcaster: --redis-shards 0: a Redis Cluster needs 1 shard or more (3 for failover)"
    ]
    assert list(tmp_path.iterdir()) == []
