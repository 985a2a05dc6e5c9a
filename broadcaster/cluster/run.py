"""`broadcaster cluster`: the docker-compose topology as local processes, for dev and demos."""

from __future__ import annotations

import signal
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from broadcaster.cluster.certificate import write_self_signed
from broadcaster.cluster.children import Children, ClusterError, installed
from broadcaster.cluster.configs import (
    MIN_REPLICAS,
    PROMETHEUS_RULES,
    REPLICAS,
    SENTINEL_SERVICE,
    deploy_file,
    hard_file_limit,
    render_nginx,
    render_prometheus,
    render_sentinel,
)
from broadcaster.cluster.processes import (
    SERVE,
    StartError,
    free_port,
    node_env,
    reap,
    redis_argv,
    settings_env,
)
from broadcaster.cluster.redis_shards import Shards


@dataclass
class Cluster(Children):
    """Redis (or a Redis Cluster of `redis_shards` primaries), N nodes, nginx and
    optionally Prometheus, as child processes."""

    nodes: int
    port: int
    prometheus: bool = False
    demo: bool = False
    tls: bool = False
    tls_port: int = 0  # 0: a free port
    sentinel: bool = False
    redis_shards: int = 0  # 0: one Redis (`sentinel`: watched by Sentinels)
    node_env: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    shards: Shards | None = field(default=None, init=False)

    def start(self) -> None:
        """Start everything and wait until each part answers."""
        binaries = ["redis-server", "nginx"] + (["prometheus"] if self.prometheus else [])
        for binary in binaries + (["redis-cli"] if self.redis_shards else []):
            installed(binary)
        redis_url = self._start_shards() if self.redis_shards else self._start_redis()
        node_ports = [free_port() for _ in range(self.nodes)]
        for n, node_port in enumerate(node_ports, 1):
            env = node_env(node_port, redis_url, node_id=f"node{n}", trusted_proxies="127.0.0.1")
            self._spawn(f"node{n}", list(SERVE), {**env, **self.node_env})
            self.addresses[f"node{n}"] = f"http://127.0.0.1:{node_port}"
        for n, node_port in enumerate(node_ports, 1):
            self._wait_http(f"node{n}", f"http://127.0.0.1:{node_port}/readyz")
        nginx_conf = self._write_nginx_conf(node_ports)
        self._spawn(
            "lb",
            [
                installed("nginx"),
                "-p",
                str(self.workdir),
                "-c",
                str(nginx_conf),
                "-g",
                "daemon off;",
            ],
        )
        self._wait_http("lb", f"http://127.0.0.1:{self.port}/healthz", port=self.port)
        self.addresses["lb"] = f"http://127.0.0.1:{self.port}"
        if self.tls:
            tls_url = f"https://127.0.0.1:{self.tls_port}"
            trust = ssl.create_default_context(cafile=self.workdir / "tls" / "cert.pem")
            self._wait_http("lb", f"{tls_url}/healthz", context=trust, port=self.tls_port)
            self.addresses["lb-tls"] = tls_url
        if self.demo:
            env = {**settings_env({"redis_url": redis_url}), **self.node_env}
            self._spawn("demo", [sys.executable, "-m", "broadcaster", "demo"], env)
            self.addresses["demo"] = "producer"
        if self.prometheus:
            prom_port = free_port()
            prom_conf = self.workdir / "prometheus.yml"
            prom_conf.write_text(render_prometheus(deploy_file("prometheus.yml"), node_ports))
            rules = self.workdir / PROMETHEUS_RULES  # where prometheus.yml looks for them
            rules.parent.mkdir(exist_ok=True)
            rules.write_text(deploy_file(PROMETHEUS_RULES))
            self._spawn(
                "prometheus",
                [
                    installed("prometheus"),
                    f"--config.file={prom_conf}",
                    f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
            )
            self._wait_http("prometheus", f"http://127.0.0.1:{prom_port}/-/ready")
            self.addresses["prometheus"] = f"http://127.0.0.1:{prom_port}"

    def _start_redis(self) -> str:
        """Redis (AOF), and with `sentinel` two replicas and three Sentinels, every server
        refusing writes without a replica in reach; the nodes' URL."""
        port = free_port()
        ha = MIN_REPLICAS if self.sentinel else ()
        self._spawn("redis", self._redis_server(port, "--repl-diskless-sync-delay", "0", *ha))
        self._wait_port("redis", port)
        self.addresses["redis"] = f"redis://127.0.0.1:{port}"
        if not self.sentinel:
            return self.addresses["redis"]
        for n in range(1, REPLICAS + 1):
            replica = free_port()
            primary = ("--replicaof", "127.0.0.1", str(port))
            self._spawn(f"replica{n}", self._redis_server(replica, *ha, *primary))
            self._wait_port(f"replica{n}", replica)
            self.addresses[f"replica{n}"] = f"redis://127.0.0.1:{replica}"
        sentinels = [free_port() for _ in range(3)]
        for n, sentinel in enumerate(sentinels, 1):
            config = self.workdir / f"sentinel{n}.conf"  # Sentinel rewrites it: its own file
            config.write_text(render_sentinel(sentinel, port, self.workdir))
            self._spawn(f"sentinel{n}", [installed("redis-server"), str(config), "--sentinel"])
            self._wait_port(f"sentinel{n}", sentinel)
            self.addresses[f"sentinel{n}"] = f"127.0.0.1:{sentinel}"
        hosts = ",".join(f"127.0.0.1:{sentinel}" for sentinel in sentinels)
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}"

    def _start_shards(self) -> str:
        """A Redis Cluster: `redis_shards` primaries with a replica each; the nodes' URL."""
        self.shards = Shards.pick(self.redis_shards)
        for name, port in self.shards.servers():
            self._spawn(name, self._redis_server(port, *self.shards.options(port)))
        for name, port in self.shards.servers():
            self._wait_port(name, port)
            self.addresses[name] = f"redis://127.0.0.1:{port}"
        try:
            self.shards.create()
        except StartError as exc:
            raise ClusterError(f"{exc}; see the redis logs in {self.workdir}") from None
        return self.shards.url

    def publish_hints(self) -> list[str]:
        """Commands that publish to this cluster's Redis, to print."""
        if self.shards is not None:
            return self.shards.publish_hints()
        port = self.addresses["redis"].rsplit(":", 1)[1]
        return [f"redis-cli -p {port} FCALL sse_publish 1 news hello"]

    def _redis_server(self, port: int, *extra: str) -> list[str]:
        data = self.workdir / f"redis-{port}"
        data.mkdir(exist_ok=True)
        return redis_argv(port, data, *extra, durable=True, binary=installed("redis-server"))

    def pid(self, name: str) -> int:
        """The pid behind an address: nginx serves both `lb` and `lb-tls`."""
        return self.processes[name.removesuffix("-tls")].pid

    def _write_nginx_conf(self, node_ports: list[int]) -> Path:
        """The load balancer's config (and its certificate with TLS) in the workdir."""
        if self.tls:
            write_self_signed(self.workdir / "tls")  # where the config's relative paths point
            self.tls_port = self.tls_port or free_port()
        config = render_nginx(
            deploy_file("nginx.conf"),
            self.port,
            node_ports,
            tls=self.tls_port if self.tls else None,
            max_files=hard_file_limit(),
        )
        path = self.workdir / "nginx.conf"
        path.write_text(config)
        return path

    def stop(self) -> None:
        """Stop the load balancer, then the nodes, then Redis (replicas first); each
        within a bound."""
        order = ["lb", "prometheus", "demo", "sentinel1", "sentinel2", "sentinel3"]
        order += [name for name in self.processes if name.startswith("node")]
        order += reversed([name for name in self.processes if name not in order])
        for name in order:
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGQUIT if name == "lb" else signal.SIGTERM)
        for process in self.processes.values():
            reap(process)


def run(cluster: Cluster) -> None:
    """Run `cluster` until SIGINT or SIGTERM, printing every address."""
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        cluster.start()
        for name, address in cluster.addresses.items():
            print(f"{name:<11} {address:<28} pid {cluster.pid(name)}", flush=True)
        print(f"try: curl -N '{cluster.addresses['lb']}/events?channel=news'", flush=True)
        if cluster.tls:
            tls_url = cluster.addresses["lb-tls"]
            print(f"try: curl -kN '{tls_url}/events?channel=news'", flush=True)
        for hint in cluster.publish_hints():
            print(f"and: {hint}", flush=True)
        print(f"logs in {cluster.workdir}; Ctrl-C stops everything", flush=True)
        while not stopping:
            time.sleep(0.2)
    finally:
        cluster.stop()
    print("stopped", flush=True)
