"""What is under test: a given `--target` URL, or a node (and Redis) we start and stop:
our broadcaster, or Nchan (nginx + Redis, see nchan.py) to compare with."""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from broadcaster.cluster.processes import free_port

from . import nchan
from .node import Managed, gauge, node_command, node_env, start_node, start_redis

NODE_CORE = 0


@dataclass
class Target:
    url: str  # an SSE URL, e.g. http://127.0.0.1:8080/events?channel=bench
    token: str
    redis_url: str | None = None
    node_pid: int | None = None
    node: Managed | None = None
    log_dir: Path | None = None
    generator_cores: list[int] | None = None
    notes: list[str] = field(default_factory=list)
    server: str = "broadcaster"  # or "nchan"

    @property
    def base(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def channel(self) -> str:
        return parse_qs(urlsplit(self.url).query).get("channel", ["bench"])[0]

    @property
    def publish_url(self) -> str:
        return self.base + ("/pub" if self.server == "nchan" else "/publish")

    def connections(self) -> float | None:
        """How many subscribers the server says it holds (None if it does not say)."""
        if self.server == "nchan":
            return nchan.subscribers(self.base)
        return gauge(self.base, "broadcaster_connections")

    def serving_pid(self) -> int:
        assert self.node is not None
        # nginx's connections live in its worker, not in the master we started.
        return nchan.worker_pid(self.base) if self.server == "nchan" else self.node.pid

    def restart_node(self) -> None:
        """Stop our node and start it again (same port)."""
        if self.node is None:
            raise RuntimeError("--restart needs a node started by the tool (no --target)")
        self.node.stop()
        start_node(self.node, self.base)
        self.node_pid = self.serving_pid()


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    address = ipaddress.ip_address(socket.gethostbyname(host))
    if address not in ipaddress.ip_network("127.0.0.0/8"):
        raise SystemExit(f"refusing {url}: only loopback (127.0.0.0/8) targets are allowed")


@contextmanager
def target_for(
    url: str | None,
    *,
    token: str,
    redis: bool,
    redis_url: str | None,
    node_pid: int | None,
    channel: str = "bench",
    pin: bool = True,
    server: str = "broadcaster",
) -> Iterator[Target]:
    """The target; when `url` is None, start redis (if asked, always for Nchan) and a node
    (ours or Nchan), stop them after."""
    if url is not None:
        check_loopback(url)
        yield Target(url, token, redis_url=redis_url, node_pid=node_pid, server=server)
        return
    log_dir = Path(tempfile.mkdtemp(prefix="loadtest-"))
    cores = os.sched_getaffinity(0)
    core = NODE_CORE if pin and len(cores) > 1 and NODE_CORE in cores else None
    others = sorted(cores - {NODE_CORE}) if core is not None else None
    managed: list[Managed] = []
    try:
        # Nchan is always Redis-backed; its Redis gets a core of its own when there is one
        # (shared with the generator on this 2-core machine).
        redis_core = others[0] if server == "nchan" and others else None
        if redis or server == "nchan":
            redis_server, redis_url = start_redis(log_dir, redis_core)
            managed.append(redis_server)
        node: Managed
        if server == "nchan":
            assert redis_url is not None
            node, base = nchan.nginx(log_dir, core, redis_url)
        else:
            port = free_port()
            node = Managed(
                "node", node_command(port, core), node_env(token, redis_url), log_dir / "node.log"
            )
            base = f"http://127.0.0.1:{port}"
        managed.append(node)
        start_node(node, base)
        notes = [
            f"{server} pinned to core {core}; generator on cores {others}"
            if core is not None
            else f"{server} not pinned"
        ]
        if server == "nchan":
            notes.append(f"nginx + Nchan, Redis-backed; redis-server on core {redis_core}")
        target = Target(
            f"{base}/events?channel={channel}",
            token,
            redis_url=redis_url,
            node=node,
            log_dir=log_dir,
            generator_cores=others,
            notes=notes,
            server=server,
        )
        target.node_pid = target.serving_pid()
        yield target
    finally:
        for proc in reversed(managed):
            proc.stop()
