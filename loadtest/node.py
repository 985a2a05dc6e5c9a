"""Processes under test: a redis-server and a broadcaster node on free loopback ports,
plus what we read from them (Prometheus gauges, CPU time). Starting, waiting and
stopping are the product's own (broadcaster.cluster.processes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from broadcaster.cluster.processes import (
    StartError,
    free_port,
    redis_argv,
    settings_env,
    spawn,
    stop,
    wait_for_http,
    wait_for_redis,
)

BROADCASTER = Path(sys.executable).with_name("broadcaster")


def pinned(command: list[str], core: int | None) -> list[str]:
    """`command` under `taskset -c core` when taskset exists and a core is asked for."""
    if core is not None and shutil.which("taskset"):
        return ["taskset", "-c", str(core), *command]
    return command


class Managed:
    """A child process that we started and must stop."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.command, self.env, self.log = name, command, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Own session: a Ctrl-C reaches only us, and we stop the child in order.
        self.proc = spawn(self.command, log=self.log, env=self.env, own_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)


def start_redis(log_dir: Path, core: int | None) -> tuple[Managed, str]:
    port = free_port()
    command = redis_argv(port, None, "--protected-mode", "no")
    redis = Managed("redis", pinned(command, core), dict(os.environ), log_dir / "redis.log")
    redis.start()
    try:
        wait_for_redis(port, 10, redis.proc)
    except StartError:
        redis.stop()
        raise RuntimeError("redis-server did not start; see " + str(redis.log)) from None
    return redis, f"redis://127.0.0.1:{port}"


def node_command(port: int, core: int | None) -> list[str]:
    return pinned([str(BROADCASTER), "serve", "--host", "127.0.0.1", "--port", str(port)], core)


def node_env(token: str, redis_url: str | None) -> dict[str, str]:
    return settings_env(
        {
            "publish_token": token,
            "max_connections": "100000",
            "access_log": "off",
            "log_level": "WARNING",
            "redis_url": redis_url or "",
        }
    )


def start_node(node: Managed, base_url: str, timeout: float = 20) -> None:
    """Start `node` and wait until /readyz answers 200."""
    node.start()
    try:
        wait_for_http(base_url + "/readyz", node.proc, timeout)
    except StartError:
        node.stop()
        raise RuntimeError("the node did not become ready; see " + str(node.log)) from None


def gauge(base_url: str, name: str) -> float | None:
    """One sample of a Prometheus metric from the node's /metrics (None if unavailable)."""
    try:
        with urllib.request.urlopen(base_url + "/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pids: list[int | None]) -> float:
    """User + system CPU time used so far by `pids` (from /proc/<pid>/stat)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        if pid is None:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total
