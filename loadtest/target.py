"""What is under test: a given `--target` URL, or a node (and Redis) we start and stop."""

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

from .node import Managed, free_port, node_command, node_env, start_node, start_redis

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

    @property
    def base(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def channel(self) -> str:
        return parse_qs(urlsplit(self.url).query).get("channel", ["bench"])[0]

    def restart_node(self) -> None:
        """Stop our node and start it again (same port)."""
        if self.node is None:
            raise RuntimeError("--restart needs a node started by the tool (no --target)")
        self.node.stop()
        start_node(self.node, self.base)
        self.node_pid = self.node.pid


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
) -> Iterator[Target]:
    """The target; when `url` is None, start redis (if asked) and a node, stop them after."""
    if url is not None:
        check_loopback(url)
        yield Target(url, token, redis_url=redis_url, node_pid=node_pid)
        return
    log_dir = Path(tempfile.mkdtemp(prefix="loadtest-"))
    cores = os.sched_getaffinity(0)
    core = NODE_CORE if pin and len(cores) > 1 and NODE_CORE in cores else None
    others = sorted(cores - {NODE_CORE}) if core is not None else None
    managed: list[Managed] = []
    try:
        if redis:
            server, redis_url = start_redis(log_dir, None)
            managed.append(server)
        port = free_port()
        node = Managed(
            "node", node_command(port, core), node_env(token, redis_url), log_dir / "node.log"
        )
        managed.append(node)
        base = f"http://127.0.0.1:{port}"
        start_node(node, base)
        notes = [
            f"node pinned to core {core}; generator on cores {others}"
            if core is not None
            else "node not pinned"
        ]
        yield Target(
            f"{base}/events?channel={channel}",
            token,
            redis_url=redis_url,
            node_pid=node.pid,
            node=node,
            log_dir=log_dir,
            generator_cores=others,
            notes=notes,
        )
    finally:
        for proc in reversed(managed):
            proc.stop()
