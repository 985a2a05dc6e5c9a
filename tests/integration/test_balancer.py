"""deploy/nginx.conf is sized for every node at its cap, and its TLS/HTTP/2 server renders
into configs the installed nginx accepts and starts without alerts."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from broadcaster.cluster.certificate import write_self_signed
from broadcaster.cluster.configs import (
    deploy_file,
    enable_tls,
    fit_files,
    hard_file_limit,
    render_nginx,
)
from broadcaster.cluster.processes import free_port, wait_for_port
from broadcaster.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TLS_BEGIN, TLS_END = "# tls: begin", "# tls: end"


@pytest.fixture
def nginx() -> str:
    """The installed nginx; its absence is a broken machine, not a skip."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), "nginx is missing: apt-get install nginx (scripts/test.sh does)"
    return binary


def directive(config: str, name: str) -> str:
    found = re.search(rf"^\s*{name} (\S+);", config, re.M)
    assert found is not None, name
    return found.group(1)


def tls_block(config: str) -> str:
    return config.partition(TLS_BEGIN)[2].partition(TLS_END)[0]


def outside_tls(config: str) -> str:
    head, _, rest = config.partition(TLS_BEGIN)
    return head + rest.partition(TLS_END)[2]


def compose_nodes() -> int:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return len([name for name in services if name.startswith("node")])


def test_every_worker_can_hold_every_node_at_its_cap() -> None:
    config = deploy_file("nginx.conf")
    streams = compose_nodes() * Settings().max_connections
    assert compose_nodes() == 3
    assert directive(config, "worker_processes") == "auto"
    connections = int(directive(config, "worker_connections"))
    assert connections >= 2 * streams  # a client and a node descriptor per stream
    assert int(directive(config, "worker_rlimit_nofile")) > connections


def test_both_servers_share_the_proxy_settings() -> None:
    config = deploy_file("nginx.conf")
    http = config.partition("http {")[2]
    before_servers = http.partition("upstream broadcaster")[0]
    for setting in ("proxy_buffering off;", "proxy_read_timeout 1h;", "proxy_next_upstream "):
        assert setting in before_servers, setting
    locations = re.findall(r"location / \{([^}]*)\}", enable_tls(config, 8443))
    assert len(locations) == 2
    assert all(body.split() == ["proxy_pass", "http://broadcaster;"] for body in locations)


def test_the_tls_server_is_there_and_off_by_default() -> None:
    config = deploy_file("nginx.conf")
    block = tls_block(config)
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    assert lines and all(line.startswith("#") for line in lines)
    assert "listen 8443 ssl http2;" in block
    assert "ssl_certificate tls/cert.pem;" in block
    assert "ssl_certificate_key tls/key.pem;" in block
    assert re.search(r"^\s*(listen \S+ ssl|ssl_)", outside_tls(config), re.M) is None
    assert tls_block(render_nginx(config, 9000, [9001])) == block


def test_rendering_tls_uncomments_only_its_block_on_a_loopback_port() -> None:
    config = deploy_file("nginx.conf")
    plain = render_nginx(config, 9000, [9001, 9002])
    tls = render_nginx(config, 9000, [9001, 9002], tls=9443)
    assert outside_tls(tls) == outside_tls(plain)
    block = tls_block(tls)
    assert "#" not in block
    assert "listen 127.0.0.1:9443 ssl http2;" in block
    assert [line.replace("# ", "", 1) for line in tls_block(config).splitlines()] == [
        line.replace("127.0.0.1:9443", "8443") for line in block.splitlines()
    ]


def test_file_limits_are_lowered_to_what_the_process_may_have() -> None:
    config = deploy_file("nginx.conf")
    nofile = int(directive(config, "worker_rlimit_nofile"))
    assert fit_files(config, nofile) == config
    assert fit_files(config, nofile * 2) == config
    fitted = fit_files(config, 20_000)
    assert int(directive(fitted, "worker_rlimit_nofile")) == 20_000
    connections = int(directive(fitted, "worker_connections"))
    assert 16_384 < connections < 20_000  # still more than before this tuning

    def others(text: str) -> list[str]:
        return [line for line in text.splitlines() if "worker_" not in line]

    assert others(fitted) == others(config)


def loopback_config(directory: Path, tls: bool) -> Path:
    """The config as `broadcaster cluster` writes it, with a certificate if `tls`."""
    if tls:
        write_self_signed(directory / "tls")
    config = render_nginx(
        deploy_file("nginx.conf"),
        free_port(),
        [free_port()],
        tls=free_port() if tls else None,
        max_files=hard_file_limit(),
    )
    path = directory / "nginx.conf"
    path.write_text(config)
    return path


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_the_installed_nginx_accepts_the_loopback_config(
    nginx: str, tmp_path: Path, tls: bool
) -> None:
    config = loopback_config(tmp_path, tls)
    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(config), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
    assert "[emerg]" not in checked.stderr and "[alert]" not in checked.stderr, checked.stderr


def open_file_limit(pid: int) -> tuple[int, int]:
    """A process's (soft, hard) limit on open files, as /proc shows it to any user."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"/proc/{pid}/limits has no open files line")


def children(pid: int) -> list[int]:
    """The pids of a process's children (nginx's workers)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def wait_for_worker_limits(
    master: int, expected: tuple[int, int], timeout: float = 10
) -> list[tuple[int, int]]:
    """The workers' open file limits, once all have `expected` or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        limits = [open_file_limit(worker) for worker in children(master)]
        if (limits and all(limit == expected for limit in limits)) or time.monotonic() > deadline:
            return limits
        time.sleep(0.05)


@pytest.fixture
def running_nginx(nginx: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """nginx started on the TLS loopback config; stopped gracefully after the test."""
    config = loopback_config(tmp_path, tls=True)
    process = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(config), "-e", "stderr", "-g", "daemon off;"],
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process, config
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)
    process.communicate(timeout=15)


def test_nginx_starts_on_the_loopback_config_without_alerts(
    running_nginx: tuple[subprocess.Popen[str], Path],
) -> None:
    process, config = running_nginx
    listen = re.findall(r"listen 127\.0\.0\.1:(\d+)", config.read_text())
    assert len(listen) == 2
    for port in listen:
        wait_for_port(int(port), 10)
    nofile = int(directive(config.read_text(), "worker_rlimit_nofile"))
    # Each worker sets its limit as it starts: setrlimit did not fail if all have it.
    limits = wait_for_worker_limits(process.pid, (nofile, nofile))
    assert limits and all(limit == (nofile, nofile) for limit in limits), limits
    process.send_signal(signal.SIGQUIT)
    _, errors = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "[alert]" not in errors and "[emerg]" not in errors, errors
