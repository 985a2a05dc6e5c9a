"""A Redis Cluster of our own on loopback: primaries and their replicas, each a
`RedisServer`, joined by `broadcaster.cluster.redis_cluster.create_cluster`."""

from __future__ import annotations

from pathlib import Path

from redis.crc import key_slot

from broadcaster.cluster.redis_cluster import cluster_options, cluster_port, create_cluster
from tests.support.processes import RedisServer


class RedisClusterGroup:
    """`shards` primaries with `replicas` replicas each."""

    def __init__(self, workdir: Path, shards: int = 3, replicas: int = 1) -> None:
        self.replicas = replicas
        self.servers = [
            RedisServer(workdir / f"cluster{n}") for n in range(shards * (1 + replicas))
        ]
        for server in self.servers:
            server.port = cluster_port()  # (its bus port, 10000 above, must be free too)
            server.extra = (*server.extra, *cluster_options(server.port))

    @property
    def seeds(self) -> str:
        """Every node's address, comma-separated."""
        return ",".join(f"127.0.0.1:{server.port}" for server in self.servers)

    @property
    def url(self) -> str:
        """The `redis+cluster://` URL that names every node as a seed."""
        return f"redis+cluster://{self.seeds}"

    def flush(self) -> None:
        """Empty every primary (its functions stay)."""
        for primary in self.primaries():
            primary.cli("FLUSHALL")

    def start(self) -> None:
        """Start every server, then join them (the first ones become the primaries)."""
        for server in self.servers:
            server.workdir.mkdir(parents=True, exist_ok=True)
            server.start()
        create_cluster([server.port for server in self.servers], replicas=self.replicas)

    def primaries(self) -> list[RedisServer]:
        """The servers that are primaries now."""
        return [s for s in self.servers if s.cli("ROLE").startswith("master")]

    def owner(self, key: str) -> RedisServer:
        """The primary that serves `key`'s slot now (as `CLUSTER NODES` says)."""
        return self.owner_of(self.slot(key))

    def owner_of(self, slot: int, asked: RedisServer | None = None) -> RedisServer:
        """The primary that serves `slot` now, as `asked` (the first server) says."""
        for line in (asked or self.servers[0]).cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2].split(","):
                continue
            for served in fields[8:]:
                first, _, last = served.partition("-")
                if first.isdigit() and int(first) <= slot <= int(last or first):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(s for s in self.servers if s.port == port)
        raise AssertionError(f"no primary serves slot {slot}")

    def channels_by_primary(self) -> dict[int, str]:
        """A channel on each primary (by port), named by a tag that lands there."""
        found: dict[int, str] = {}
        wanted = len(self.primaries())
        for n in range(1000):
            found.setdefault(self.owner_of(key_slot(f"t{n}".encode())).port, f"{{t{n}}}c")
            if len(found) == wanted:
                return found
        raise AssertionError("no tag lands on some primary")

    def channel_elsewhere(self, primary: RedisServer) -> str:
        """A channel whose group another primary serves."""
        return next(c for port, c in self.channels_by_primary().items() if port != primary.port)

    def slot(self, key: str) -> int:
        """The hash slot of `key`."""
        return int(self.servers[0].cli("CLUSTER", "KEYSLOT", key))

    def move_slot(self, slot: int, to: RedisServer) -> None:
        """Migrate `slot` (and its keys) to the primary `to`, as `redis-cli --cluster
        reshard` does for each slot it moves."""
        source = next(p for p in self.primaries() if _serves(p, slot, self))
        target_id, source_id = (s.cli("CLUSTER", "MYID").strip() for s in (to, source))
        to.cli("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        source.cli("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        while keys := source.cli("CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
            source.cli("MIGRATE", "127.0.0.1", str(to.port), "", "0", "5000", "KEYS", *keys)
        for server in (to, source):
            server.cli("CLUSTER", "SETSLOT", str(slot), "NODE", target_id)

    def stop(self) -> None:
        for server in self.servers:
            server.kill()


def _serves(primary: RedisServer, slot: int, cluster: RedisClusterGroup) -> bool:
    return cluster.owner_of(slot, asked=primary) is primary
