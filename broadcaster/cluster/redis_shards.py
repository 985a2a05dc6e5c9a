"""`broadcaster cluster --redis-shards N`: a local Redis Cluster in place of the single
Redis. N shard primaries, each with a replica, joined by `create_cluster`; the nodes get
a `redis+cluster://` URL that names every primary as a seed.

No server gets `min-replicas-to-write` (`MIN_REPLICAS`, which Sentinel's servers get).
Redis Cluster promotes a replica itself when its primary fails, and with one replica per
shard the promoted one has no replica until the old primary comes back. With the
setting it would refuse every publish to that shard meanwhile, so a failover it
survived would still stop its channels. A primary cut off from the majority of
primaries stops taking writes by itself after the node timeout (2 s here), well within
the 10 s a new primary's ids jump ahead (docs/guarantees.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from broadcaster.cluster.processes import LOOPBACK
from broadcaster.cluster.redis_cluster import (
    BUS_OFFSET,
    cluster_options,
    cluster_port,
    create_cluster,
)

REPLICAS = 1
"""The replicas of each shard primary."""
CREATE_TIMEOUT = 60  # seconds the servers may take to agree that the cluster is up


@dataclass(frozen=True, slots=True)
class Shards:
    """The servers of a local Redis Cluster, by port: its primaries and their replicas
    (the first replica follows the first primary when there are fewer than three; with
    more, `redis-cli --cluster create` pairs them, each primary with one)."""

    primaries: tuple[int, ...]
    replicas: tuple[int, ...]

    @classmethod
    def pick(cls, shards: int) -> Shards:
        """`shards` primaries and their replicas, on ports free now whose cluster bus
        ports are free too, and none of them another's bus port."""
        ports: list[int] = []
        while len(ports) < shards * (1 + REPLICAS):
            port = cluster_port()
            taken = {*ports, *(p + BUS_OFFSET for p in ports)}
            if port not in taken and port + BUS_OFFSET not in taken:
                ports.append(port)
        return cls(tuple(ports[:shards]), tuple(ports[shards:]))

    def servers(self) -> list[tuple[str, int]]:
        """Every server's name and port: `redis1`... for the primaries, then `replica1`...
        (names kept after a failover swaps their roles)."""
        return [
            *((f"redis{n}", port) for n, port in enumerate(self.primaries, 1)),
            *((f"replica{n}", port) for n, port in enumerate(self.replicas, 1)),
        ]

    @staticmethod
    def options(port: int) -> tuple[str, ...]:
        """The options of the server on `port`, beyond those of any local Redis: a cluster
        node, whose replicas sync at once (any of them may become a primary)."""
        return (*cluster_options(port), "--repl-diskless-sync-delay", "0")

    @property
    def url(self) -> str:
        """The nodes' `redis+cluster://` URL, every primary a seed."""
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{port}" for port in self.primaries)

    def create(self) -> None:
        """Join the servers (all listening) into one cluster, and wait until it is up;
        raises `StartError` if it does not come up."""
        create_cluster([*self.primaries, *self.replicas], replicas=REPLICAS, timeout=CREATE_TIMEOUT)

    def publish_hints(self) -> list[str]:
        """Commands that publish to the cluster, to print."""
        return [
            f"redis-cli -c -p {self.primaries[0]} FCALL sse_publish 1 news hello",
            f"BROADCASTER_REDIS_URL={self.url} broadcaster publish news hello",
        ]


def refusal(shards: int | None, *, sentinel: bool) -> str | None:
    """Why `broadcaster cluster --redis-shards shards` cannot run (with `--sentinel` if
    `sentinel`), in a line; None when it can (or without `--redis-shards`)."""
    if shards is None:
        return None
    if sentinel:
        return (
            "--redis-shards and --sentinel do not go together: a Redis Cluster promotes "
            "its replicas itself, without Sentinels; choose one"
        )
    if shards < 1:
        return f"--redis-shards {shards}: a Redis Cluster needs 1 shard or more (3 for failover)"
    return None
