"""Nchan (nginx with the Nchan module, Redis-backed) as a server under test, side by side
with our node: same URL shape (`GET /events?channel=<name>`, EventSource), publishes by
`POST /pub?channel=<name>` with the event data as the body. The config is `nchan.conf`.
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
import string
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from broadcaster.cluster.processes import free_port, stop_group, which

from .node import Managed, pinned

CONF = Path(__file__).with_name("nchan.conf")
# Debian's libnginx-mod-nchan installs the module here (mod-nchan.conf loads it from there).
MODULES = [Path("/usr/lib/nginx/modules"), Path("/usr/share/nginx/modules")]
RESERVED_FDS = 64  # listen socket, log, Redis connections, ...
# nginx allocates and touches all worker_connections up front (~0.4 KB each): cap them
# where the hard fd limit is huge (it is 20,000 on the test machine).
MAX_FDS = 65536


class _Conf(string.Template):
    delimiter = "@"  # nginx variables use `$`


class Nginx(Managed):
    """The nginx master; stopping it also kills a worker the master left behind."""

    def stop(self) -> None:
        # The master leads its own session: if it were killed rather than stopped, its
        # worker would otherwise live on, holding the port. So its whole group goes.
        if self.proc is not None:
            stop_group(self.proc)


def module_path() -> Path:
    for folder in MODULES:
        if (folder / "ngx_nchan_module.so").exists():
            return folder / "ngx_nchan_module.so"
    raise RuntimeError("ngx_nchan_module.so not found: apt-get install libnginx-mod-nchan")


def config(prefix: Path, port: int, redis_url: str) -> str:
    """nchan.conf filled in for one run."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = MAX_FDS if hard == resource.RLIM_INFINITY else min(hard, MAX_FDS)
    return _Conf(CONF.read_text()).substitute(
        module=module_path(),
        prefix=prefix,
        port=port,
        redis_port=urlsplit(redis_url).port or 6379,
        nofile=nofile,
        connections=nofile - RESERVED_FDS,
        user=f"{pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name}",
    )


def nginx(log_dir: Path, core: int | None, redis_url: str) -> tuple[Nginx, str]:
    """An nginx+Nchan (not started yet) in `log_dir`/nchan, and its base URL."""
    prefix = log_dir / "nchan"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(config(prefix, port, redis_url))
    binary = which("nginx") or "nginx"
    command = pinned([binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr"], core)
    return Nginx("nchan", command, dict(os.environ), log_dir / "nchan.log"), (
        f"http://127.0.0.1:{port}"
    )


def worker_pid(base_url: str) -> int:
    """The pid of the (single) nginx worker: it is what holds the connections."""
    with urllib.request.urlopen(base_url + "/pid", timeout=5) as answer:
        return int(answer.read())


def subscribers(base_url: str) -> float | None:
    """The subscriber count from nchan_stub_status (None if unavailable)."""
    try:
        with urllib.request.urlopen(base_url + "/nchan_status", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                name, _, value = line.partition(":")
                if name.strip() == "subscribers":
                    return float(value)
    except (OSError, ValueError):
        return None
    return None
