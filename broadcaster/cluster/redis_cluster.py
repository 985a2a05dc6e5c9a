"""A Redis Cluster on loopback: `redis-server --cluster-enabled yes` processes joined into
one cluster by `redis-cli --cluster create`, for `broadcaster cluster` and the tests.

The servers are started by the caller (`cluster_options` go on each one's command line),
then `create_cluster` joins them: the first `len(ports) / (replicas + 1)` become the
primaries, which share the 16384 slots, and the others their replicas. (One or two
primaries, which `redis-cli --cluster create` does not make, are joined by hand.)
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import time
from collections.abc import Sequence

from broadcaster.cluster.processes import LOOPBACK, StartError, which

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # redis-cli colours its output
NODE_TIMEOUT_MS = 2000
"""How long a shard primary may be unreachable before its replica is promoted (Redis's
default is 15 s; a local cluster acts quickly)."""
SLOTS = 16384
BUS_OFFSET = 10000
"""A cluster node also listens on its port + 10000, for the cluster bus."""


def cluster_port() -> int:
    """A loopback port free now, whose bus port is free too: both below the system's
    ephemeral range (from 32768 on Linux), where the system hands out ports to other
    programs' connections (and where a bus port would pass 65535)."""
    while True:
        port = random.randrange(10000, 22768)
        if _free(port) and _free(port + BUS_OFFSET):
            return port


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def cluster_options(port: int) -> tuple[str, ...]:
    """The command-line options that make the redis-server on `port` a cluster node (its
    node table in its own working directory)."""
    return (
        *("--cluster-enabled", "yes"),
        *("--cluster-config-file", f"nodes-{port}.conf"),
        *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
    )


def create_cluster(
    ports: Sequence[int], *, replicas: int = 1, password: str | None = None, timeout: float = 60
) -> None:
    """Join the cluster nodes listening on `ports` into one cluster with `replicas` replicas
    per primary, and wait until every node says the cluster is up."""
    cli = which("redis-cli")
    if cli is None:
        raise StartError("redis-cli is missing: sudo apt-get install redis-tools")
    env = {**os.environ, **({"REDISCLI_AUTH": password} if password else {})}
    addresses = [f"{LOOPBACK}:{port}" for port in ports]
    if len(ports) // (replicas + 1) < 3:
        # redis-cli makes clusters of three primaries or more; fewer are joined by hand.
        _join_by_hand(cli, ports, replicas, env, timeout)
        _wait_ok(ports, password, timeout, addresses)
        return
    argv = [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(replicas)]
    done = subprocess.run(
        [*argv, "--cluster-yes"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if done.returncode != 0 or f"All {SLOTS} slots covered" not in done.stdout:
        said = [line.strip() for line in _ANSI.sub("", done.stdout + done.stderr).splitlines()]
        last = "; ".join([line for line in said if line][-3:]) or "no output"
        raise StartError(f"redis-cli --cluster create failed: {last}")
    _wait_ok(ports, password, timeout, addresses)


def _join_by_hand(
    cli: str, ports: Sequence[int], replicas: int, env: dict[str, str], timeout: float
) -> None:
    """Primaries that meet the first and share the slots in equal ranges, then their
    replicas: the first replica follows the first primary, and so on round."""
    count = len(ports) // (replicas + 1)
    primaries, followers = ports[:count], ports[count:]
    share = SLOTS // count
    for n, port in enumerate(primaries):
        last = SLOTS - 1 if n == count - 1 else (n + 1) * share - 1
        _call(cli, port, env, "CLUSTER", "ADDSLOTSRANGE", str(n * share), str(last))
    for port in ports[1:]:
        _call(cli, port, env, "CLUSTER", "MEET", LOOPBACK, str(ports[0]))
    for n, port in enumerate(followers):
        primary = _call(cli, primaries[n % count], env, "CLUSTER", "MYID", expect=None)
        deadline = time.monotonic() + timeout
        # It may follow the primary once the handshake has told it the primary's id.
        while primary not in _call(cli, port, env, "CLUSTER", "NODES", expect=None):
            if time.monotonic() > deadline:
                raise StartError(f"the cluster node on {port} never met {primary}")
            time.sleep(0.05)
        _call(cli, port, env, "CLUSTER", "REPLICATE", primary)


def _call(
    cli: str, port: int, env: dict[str, str], *command: str, expect: str | None = "OK"
) -> str:
    """What the server on `port` answers `command`; with `expect`, it must answer that."""
    done = subprocess.run(
        [cli, "-p", str(port), *command],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
    )
    answer = done.stdout.strip()
    if done.returncode != 0 or (expect is not None and answer != expect):
        raise StartError(f"{' '.join(command)} failed on {port}: {answer or done.stderr}")
    return answer


def _wait_ok(
    ports: Sequence[int], password: str | None, timeout: float, addresses: list[str]
) -> None:
    deadline = time.monotonic() + timeout
    # Every slot served, and every node known to every node (gossip spreads the last
    # nodes a moment after the slots are covered).
    while not all(_whole(port, password, len(ports)) for port in ports):
        if time.monotonic() > deadline:
            raise StartError(f"the Redis Cluster on {addresses} did not come up")
        time.sleep(0.1)


def _whole(port: int, password: str | None, nodes: int) -> bool:
    info = cluster_info(port, password)
    return (
        info.get("cluster_state") == "ok"
        and info.get("cluster_slots_ok") == str(SLOTS)
        and info.get("cluster_known_nodes") == str(nodes)
    )


def cluster_ok(port: int, password: str | None = None) -> bool:
    """Whether the cluster node on `port` says every slot is served and it knows the whole
    cluster (`CLUSTER INFO`)."""
    info = cluster_info(port, password)
    return info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == str(SLOTS)


def cluster_info(port: int, password: str | None = None) -> dict[str, str]:
    """`CLUSTER INFO` of the node on `port`, as fields (empty if it does not answer)."""
    cli = which("redis-cli") or "redis-cli"
    env = {**os.environ, **({"REDISCLI_AUTH": password} if password else {})}
    try:
        done = subprocess.run(
            [cli, "-p", str(port), "CLUSTER", "INFO"],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=5,
        )
    except subprocess.TimeoutExpired:
        return {}
    fields = (line.strip().partition(":") for line in done.stdout.splitlines())
    return {name: value for name, _, value in fields if value}
