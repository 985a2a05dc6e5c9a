"""The deploy/ configs (carried by the package as `broadcaster.deploy`), and their
rendering for `broadcaster cluster`: loopback ports, the TLS server, local file limits."""

from __future__ import annotations

import re
import resource
from importlib import resources
from pathlib import Path

import yaml


class ConfigError(Exception):
    """A deploy/ config lacks a part the rendering needs."""


def deploy_file(name: str) -> str:
    """A config of deploy/, which the package carries as `broadcaster.deploy`."""
    return resources.files("broadcaster.deploy").joinpath(name).read_text()


def render_nginx(
    config: str,
    listen: int,
    nodes: list[int],
    *,
    tls: int | None = None,
    max_files: int | None = None,
) -> str:
    """The load balancer config set for loopback: its node lines and listen line, the TLS
    server enabled on port `tls` if given, its file limits lowered to `max_files` if given."""
    rendered = _render_nodes(config, nodes)
    rendered = re.sub(r"listen \d+;", f"listen 127.0.0.1:{listen};", rendered, count=1)
    if tls is not None:
        rendered = enable_tls(rendered, tls)
    if max_files is not None:
        rendered = fit_files(rendered, max_files)
    return rendered


def _render_nodes(config: str, nodes: list[int]) -> str:
    begin, end = "# nodes: begin", "# nodes: end"
    head, _, rest = config.partition(begin)
    old, _, tail = rest.partition(end)
    if not old:
        raise ConfigError("deploy/nginx.conf has no '# nodes: begin/end' block")
    indent = re.search(r"\n(\s*)server ", old)
    pad = indent.group(1) if indent else "        "
    options = re.search(r"server \S+ ([^;]*);", old)
    extra = f" {options.group(1)}" if options else ""
    lines = "".join(f"\n{pad}server 127.0.0.1:{port}{extra};" for port in nodes)
    return f"{head}{begin}{lines}\n{pad}{end}{tail}"


def enable_tls(config: str, port: int) -> str:
    """Uncomment the server between `# tls: begin/end`, listening on loopback `port`."""
    begin, end = "# tls: begin", "# tls: end"
    head, _, rest = config.partition(begin)
    block, _, tail = rest.partition(end)
    if not block:
        raise ConfigError("deploy/nginx.conf has no '# tls: begin/end' block")
    block = re.sub(r"(?m)^(\s*)# ?", r"\1", block)
    block = re.sub(r"listen \d+ ssl", f"listen 127.0.0.1:{port} ssl", block, count=1)
    return f"{head}{begin}{block}{end}{tail}"


def fit_files(config: str, max_files: int) -> str:
    """Lower worker_rlimit_nofile to `max_files` if above it, and worker_connections in
    proportion: nginx cannot raise its limit past the hard one and would log alerts."""
    nofile = int(_directive(config, "worker_rlimit_nofile"))
    if nofile <= max_files:
        return config
    connections = int(_directive(config, "worker_connections")) * max_files // nofile
    config = _set_directive(config, "worker_rlimit_nofile", str(max_files))
    return _set_directive(config, "worker_connections", str(connections))


def hard_file_limit() -> int | None:
    """The most descriptors this process (and nginx, its child) may open; None: no limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def _directive(config: str, name: str) -> str:
    found = re.search(rf"^\s*{name} (\S+);", config, re.M)
    if found is None:
        raise ConfigError(f"deploy/nginx.conf has no {name}")
    return found.group(1)


def _set_directive(config: str, name: str, value: str) -> str:
    return re.sub(rf"(?m)^(\s*{name}) \S+;", rf"\g<1> {value};", config, count=1)


PROMETHEUS_RULES = "prometheus/rules.yml"
"""The alerting and recording rules, in deploy/; prometheus.yml names them by this path,
relative to itself."""


def render_prometheus(config: str, nodes: list[int]) -> str:
    """The scrape config with its targets set for loopback ports."""
    parsed = yaml.safe_load(config)
    for job in parsed["scrape_configs"]:
        for static in job.get("static_configs", []):
            static["targets"] = [f"127.0.0.1:{port}" for port in nodes]
    return str(yaml.safe_dump(parsed, sort_keys=False))


SENTINEL_SERVICE = "primary"
REPLICAS = 2
"""The replicas of a Sentinel cluster: after one failover, the new primary still has one."""
MIN_REPLICAS = (
    "--min-replicas-to-write",
    "1",
    "--min-replicas-max-lag",
    "4",
)
"""On every server of a Sentinel cluster: a primary that has heard from no replica for
4 s (isolated by a partition) refuses publishes, long before the 10 s a new primary's
ids jump past the old one's (see docs/guarantees.md)."""


def render_sentinel(port: int, primary: int, workdir: Path) -> str:
    """A loopback Sentinel's config, watching the primary on `primary` as `primary`.

    Quick to act, for a local cluster: down after 2 s. Three Sentinels that see the
    primary go at the same moment may split their votes; they try again after twice the
    failover timeout, so it is short too (3 s), not the 10 s that left a failover 20 s
    away. Every replica follows a new primary at once (`parallel-syncs`), not one after
    another: a second promotion right after the first then less often picks a replica
    that lacks the first new primary's writes (nodes read only from the primary).
    """
    return (
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 2\n"
        f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 2000\n"
        f"sentinel failover-timeout {SENTINEL_SERVICE} 3000\n"
        f"sentinel parallel-syncs {SENTINEL_SERVICE} {REPLICAS}\n"
    )
