"""`broadcaster cluster` as the tests run it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from broadcaster.cluster.processes import free_port, settings_env

Cluster = dict[str, tuple[str, int]]  # name -> (address, pid)


@contextmanager
def local_cluster(
    nodes: int,
    *flags: str,
    command: Sequence[str] = (sys.executable, "-m", "broadcaster"),
    cwd: Path | None = None,
    **env: str,
) -> Iterator[Cluster]:
    """Run `broadcaster cluster` and yield the addresses and pids it prints.

    `command` runs broadcaster (an installed wheel's script, say), from `cwd`.
    """
    port = free_port()
    process = subprocess.Popen(
        [
            *command,
            "cluster",
            "--nodes",
            str(nodes),
            "--port",
            str(port),
            *flags,
        ],
        env=settings_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
    )
    assert process.stdout is not None
    cluster: Cluster = {}
    try:
        for line in process.stdout:
            if line.startswith("logs in"):
                break
            if line.startswith(("try:", "and:")):
                continue
            name, address, _, pid = line.split()
            cluster[name] = (address, int(pid))
        assert "lb" in cluster, f"cluster did not start: {cluster}"
        yield cluster
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 0 and "stopped" in out, out


async def fcall_publish(redis_url: str, channel: str, data: str) -> str:
    """Publish as a user would from a shell: `redis-cli FCALL sse_publish`; returns the id."""
    port = redis_url.rsplit(":", 1)[1]
    cli = await asyncio.create_subprocess_exec(
        *("redis-cli", "-p", port, "FCALL", "sse_publish", "1", channel, data),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await cli.communicate()
    assert cli.returncode == 0 and out.strip(), out
    return out.decode().strip()
