"""`broadcaster cluster` as the tests run it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Collection, Iterator, Sequence
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
    stop_with: signal.Signals = signal.SIGINT,
    **env: str,
) -> Iterator[Cluster]:
    """Run `broadcaster cluster` and yield the addresses and pids it prints; then stop it
    with `stop_with` (a Ctrl-C by default), and it must say it stopped.

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
        process.send_signal(stop_with)
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


def leftovers(pids: Collection[int]) -> list[str]:
    """The processes still running that are one of `pids`, or in a session one of them
    leads (`broadcaster cluster` starts each child in a session of its own: nginx's
    workers are in their master's), as `pid command` lines."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
            command = stat.with_name("cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        pid, session = int(stat.parent.name), int(fields[3])
        if pid in pids or session in pids:
            found.append(f"{pid} {command.strip()}")
    return found
