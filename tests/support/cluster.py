"""`broadcaster cluster` as the tests run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from .processes import free_port

Cluster = dict[str, tuple[str, int]]  # name -> (address, pid)


@contextmanager
def local_cluster(nodes: int, *flags: str, **env: str) -> Iterator[Cluster]:
    """Run `broadcaster cluster` and yield the addresses and pids it prints."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broadcaster",
            "cluster",
            "--nodes",
            str(nodes),
            "--port",
            str(port),
            *flags,
        ],
        env={**os.environ, **{f"BROADCASTER_{k.upper()}": v for k, v in env.items()}},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
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
