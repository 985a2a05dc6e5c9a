"""Real servers on free loopback ports: redis-server and `broadcaster serve` nodes, as
the tests drive them. Starting, waiting and stopping are the product's own
(broadcaster.cluster.processes, which `broadcaster cluster` and loadtest use too)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from broadcaster.cluster.processes import (
    SERVE,
    StartError,
    answers,
    free_port,
    node_env,
    redis_argv,
    rss_kb,
    settings_env,
    spawn,
    stop,
    wait_for_http,
    wait_for_port,
)
from tests.support.metrics import metric_sync


class RedisServer:
    """A redis-server process of our own, stoppable and restartable on the same port."""

    def __init__(self, workdir: Path, *extra: str, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: apt-get install redis-server"
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.password = password
        self.extra = (*extra, *(("--requirepass", password) if password else ()))
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def at(cls, port: int) -> RedisServer:
        """A handle on a server running elsewhere (for `cli`), not started here."""
        server = cls(Path("."))
        server.port = port
        return server

    @property
    def url(self) -> str:
        """The redis:// URL of this server, with its password if it has one."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or restart) the server and wait for it to accept connections."""
        argv = redis_argv(self.port, self.workdir, *self.extra, binary=self.binary)
        # Its log beside its files (appended across restarts): kept with a failed test's.
        log = self.workdir / f"redis-{self.port}.log" if self.workdir.is_dir() else None
        self.process = spawn(argv, log=log)
        wait_for_port(self.port, 10, self.process)

    def alive(self) -> bool:
        """Whether the server process runs (started, and not ended)."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server and reap it."""
        stop(self.process, signal.SIGKILL)

    def cli(self, *args: str) -> str:
        """Run redis-cli against this server; return its output."""
        env = {**os.environ, **({"REDISCLI_AUTH": self.password} if self.password else {})}
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout


def replicas_online(primary: RedisServer, count: int = 1) -> bool:
    """Whether `count` replicas finished their first sync with `primary`."""
    return primary.cli("INFO", "replication").count("state=online") == count


def caught_up(primary: RedisServer, *replicas: RedisServer) -> bool:
    """Whether every replica has applied everything the primary wrote so far.

    (`WAIT` from redis-cli cannot tell: it waits only for its own connection's writes.)
    """

    def offset(server: RedisServer, field: str) -> int:
        for line in server.cli("INFO", "replication").splitlines():
            if line.startswith(field + ":"):
                return int(line.partition(":")[2])
        return -1

    wrote = offset(primary, "master_repl_offset")
    return all(offset(replica, "slave_repl_offset") >= wrote for replica in replicas)


def rss_bytes(pid: int) -> int:
    """A process's resident memory, in bytes."""
    kb = rss_kb(pid)
    assert kb is not None, f"no VmRSS for {pid}"
    return kb * 1024


class Node:
    """A `broadcaster serve` process."""

    def __init__(self, redis_url: str | None, workdir: Path, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = {"node_id": f"node-{self.port}", **settings}
        self.env = node_env(self.port, redis_url or None, inherit=False, **settings)
        self.log = workdir / f"node-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the node and wait until it reports ready."""
        self.process = spawn(SERVE, log=self.log, env=self.env)
        try:
            wait_for_http(f"{self.url}/readyz", self.process, 15)
        except StartError as exc:
            raise AssertionError(f"node not ready ({exc}): {self.log.read_text()}") from None

    def ready(self) -> bool:
        """Whether /readyz answers 200."""
        return answers(f"{self.url}/readyz")

    def metric(self, series: str) -> float:
        """The value of one series in the node's /metrics (`name` or `name{labels}`)."""
        return metric_sync(self.url, series)

    def rss(self) -> int:
        """The node process's resident memory, in bytes."""
        assert self.process is not None
        return rss_bytes(self.process.pid)

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the node."""
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> None:
        """Stop the node (SIGTERM, then SIGKILL if it lingers)."""
        stop(self.process)


class Prometheus:
    """A prometheus process scraping `targets` (host:port) every second."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: apt-get install prometheus"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: broadcaster\n    static_configs: [{{targets: {targets}}}]\n"
        )
        self.process = spawn(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            log=workdir / "prometheus.log",
        )
        wait_for_http(f"{self.url}/-/ready", self.process, 30)

    def ready(self) -> bool:
        """Whether /-/ready answers 200."""
        return answers(f"{self.url}/-/ready")

    def stop(self) -> None:
        """Stop Prometheus."""
        stop(self.process)


class SentinelGroup:
    """A Redis primary, its replicas, and three Sentinels watching it as `service`."""

    def __init__(
        self,
        workdir: Path,
        replicas: int = 2,
        service: str = "primary",
        links: list[int] | None = None,
    ) -> None:
        """`links`: for each replica, a port that leads to the primary (a proxy that can
        cut replication), instead of the primary's own."""
        self.workdir = workdir
        self.service = service
        self.links = links
        # No 5 s wait before a replica's first sync.
        self.primary = RedisServer(workdir / "primary", "--repl-diskless-sync-delay", "0")
        self.replicas = [RedisServer(workdir / f"replica{n}") for n in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The redis+sentinel:// URL of the service."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self) -> None:
        """Start the primary, the replicas (in sync), then the Sentinels."""
        for server in (self.primary, *self.replicas):
            server.workdir.mkdir(parents=True, exist_ok=True)
        self.primary.start()
        links = self.links or [self.primary.port] * len(self.replicas)
        for replica, link in zip(self.replicas, links, strict=True):
            replica.extra = (*replica.extra, "--replicaof", "127.0.0.1", str(link))
            replica.start()
        for port in self.sentinel_ports:
            config = self.workdir / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 4000\n"
            )
            log = self.workdir / f"sentinel-{port}.log"
            self.sentinels.append(spawn([self.primary.binary, str(config), "--sentinel"], log=log))
            wait_for_port(port, 10, self.sentinels[-1])

    def master_port(self) -> int | None:
        """The primary's port as the first Sentinel sees it now."""
        out = subprocess.run(
            [
                "redis-cli",
                "-p",
                str(self.sentinel_ports[0]),
                "SENTINEL",
                "get-master-addr-by-name",
                self.service,
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        return int(out[1]) if len(out) == 2 else None

    def watching(self) -> bool:
        """Whether every Sentinel knows every replica and the other Sentinels: before
        that, a failover cannot happen (no quorum, or nothing to promote)."""
        for port in self.sentinel_ports:
            out = subprocess.run(
                ["redis-cli", "-p", str(port), "SENTINEL", "master", self.service],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            fields = dict(zip(out[::2], out[1::2], strict=False))
            if fields.get("num-slaves") != str(len(self.replicas)):
                return False
            if fields.get("num-other-sentinels") != str(len(self.sentinel_ports) - 1):
                return False
        return True

    def replicas_in_sync(self) -> bool:
        """Whether every replica is connected to the primary and caught up."""
        return replicas_online(self.primary, len(self.replicas))

    def stop(self) -> None:
        """Kill everything."""
        for sentinel in self.sentinels:
            stop(sentinel, signal.SIGKILL)
        for server in (self.primary, *self.replicas):
            server.kill()


def run_broadcaster(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run `broadcaster ARGS` to its end with only these BROADCASTER_ settings (`port="1"`
    sets BROADCASTER_PORT); what it printed and its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "broadcaster", *args],
        env=settings_env(settings, inherit=False),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
