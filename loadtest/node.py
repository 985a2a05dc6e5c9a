"""Processes under test: a redis-server and a broadcaster node on free loopback ports,
plus what we read from them (RSS, Prometheus gauges)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BROADCASTER = Path(sys.executable).with_name("broadcaster")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        with open(self.log, "ab") as out:
            # Own session: a Ctrl-C reaches only us, and we stop the child in order.
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def start_redis(log_dir: Path, core: int | None) -> tuple[Managed, str]:
    port = free_port()
    command = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]
    redis = Managed("redis", pinned(command, core), dict(os.environ), log_dir / "redis.log")
    redis.start()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return redis, f"redis://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    redis.stop()
    raise RuntimeError("redis-server did not start; see " + str(redis.log))


def node_command(port: int, core: int | None) -> list[str]:
    return pinned([str(BROADCASTER), "serve", "--host", "127.0.0.1", "--port", str(port)], core)


def node_env(token: str, redis_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BROADCASTER_PUBLISH_TOKEN=token,
        BROADCASTER_MAX_CONNECTIONS="100000",
        BROADCASTER_ACCESS_LOG="off",
        BROADCASTER_LOG_LEVEL="WARNING",
        BROADCASTER_REDIS_URL=redis_url or "",
    )
    return env


def start_node(node: Managed, base_url: str, timeout: float = 20) -> None:
    """Start `node` and wait until /readyz answers 200."""
    node.start()
    deadline = time.time() + timeout
    while time.time() < deadline:
        if node.proc is not None and node.proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(base_url + "/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    node.stop()
    raise RuntimeError("the node did not become ready; see " + str(node.log))


def rss_kb(pid: int | None) -> int | None:
    """VmRSS of `pid` in kB, from /proc."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


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
