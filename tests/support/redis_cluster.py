"""A Redis Cluster of our own on loopback: primaries and their replicas, each a
`RedisServer`, joined by `broadcaster.cluster.redis_cluster.create_cluster`."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from redis.crc import key_slot

from broadcaster.cluster.redis_cluster import (
    cluster_ok,
    cluster_options,
    cluster_port,
    create_cluster,
)
from tests.support.processes import RedisServer


class RedisClusterGroup:
    """`shards` primaries with `replicas` replicas each."""

    def __init__(self, workdir: Path, shards: int = 3, replicas: int = 1) -> None:
        self.workdir = workdir
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
        deadline = time.monotonic() + 30
        while not self.replicas_linked():
            assert time.monotonic() < deadline, "the replicas did not link to their primaries"
            time.sleep(0.05)

    def replicas_linked(self) -> bool:
        """Whether every replica is linked to its primary (`ROLE` says `connected`): only
        then can it be promoted, and confirm writes."""
        roles = [server.cli("ROLE").split("\n") for server in self.servers]
        return all(role[3].strip() == "connected" for role in roles if role[0] == "slave")

    def primaries(self) -> list[RedisServer]:
        """The servers that are primaries now."""
        return [s for s in self.servers if s.alive() and s.cli("ROLE").startswith("master")]

    def owner(self, key: str) -> RedisServer:
        """The primary that serves `key`'s slot now (as `CLUSTER NODES` says)."""
        return self.owner_of(self.slot(key))

    def owner_of(self, slot: int, asked: RedisServer | None = None) -> RedisServer:
        """The primary that serves `slot` now, as `asked` (the first server) says."""
        asked = asked or next(server for server in self.servers if server.alive())
        for line in asked.cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2].split(","):
                continue
            for served in fields[8:]:
                first, _, last = served.partition("-")
                if first.isdigit() and int(first) <= slot <= int(last or first):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(s for s in self.servers if s.port == port)
        raise AssertionError(f"no primary serves slot {slot}")

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        """The servers that replicate `primary` now."""
        named = primary.cli("CLUSTER", "MYID").strip()
        lines = primary.cli("CLUSTER", "REPLICAS", named).splitlines()
        ports = {int(line.split()[1].split("@")[0].rsplit(":", 1)[1]) for line in lines}
        return [server for server in self.servers if server.port in ports]

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
        return key_slot(key.encode())

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

    def channel_in_slots(self, first: int, count: int, prefix: str = "r") -> str:
        """A channel whose group's slot is one of `count` slots from `first`."""
        for n in range(1_000_000):
            if first <= key_slot(f"{prefix}{n}".encode()) < first + count:
                return f"{{{prefix}{n}}}c"
        raise AssertionError(f"no tag lands in slots {first}..{first + count - 1}")

    def first_slot(self, primary: RedisServer) -> int:
        """The lowest slot `primary` serves (`redis-cli --cluster reshard` moves those
        first)."""
        for line in primary.cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "myself" in fields[2]:
                return min(int(served.partition("-")[0]) for served in fields[8:])
        raise AssertionError("CLUSTER NODES names no `myself`")

    def reshard(self, source: RedisServer, target: RedisServer, slots: int) -> None:
        """`redis-cli --cluster reshard`: move `slots` slots (the lowest) of `source` to
        `target`, keys and all."""
        ids = [server.cli("CLUSTER", "MYID").strip() for server in (source, target)]
        self._cli_cluster(
            "reshard", f"127.0.0.1:{source.port}", "--cluster-from", ids[0], "--cluster-to",
            ids[1], "--cluster-slots", str(slots), "--cluster-yes",
        )  # fmt: skip

    def add_primary(self, workdir: Path) -> RedisServer:
        """Start one more cluster node and add it as an empty primary
        (`redis-cli --cluster add-node`)."""
        server = RedisServer(workdir)
        server.port = cluster_port()
        server.extra = (*server.extra, *cluster_options(server.port))
        workdir.mkdir(parents=True, exist_ok=True)
        server.start()
        self.servers.append(server)
        seed = f"127.0.0.1:{self.primaries()[0].port}"
        self._cli_cluster("add-node", f"127.0.0.1:{server.port}", seed)
        named = server.cli("CLUSTER", "MYID").strip()
        deadline = time.monotonic() + 30
        while not all(named in other.cli("CLUSTER", "NODES") for other in self._alive()):
            assert time.monotonic() < deadline, "the other nodes never heard of the new one"
            time.sleep(0.05)
        return server

    def _alive(self) -> list[RedisServer]:
        return [server for server in self.servers if server.alive()]

    def rebalance(self) -> None:
        """`redis-cli --cluster rebalance --cluster-use-empty-masters`: move slots onto
        primaries that have none."""
        seed = f"127.0.0.1:{self.primaries()[0].port}"
        self._cli_cluster("rebalance", seed, "--cluster-use-empty-masters", "--cluster-yes")

    def settled(self) -> bool:
        """Whether every live node says the cluster is ok."""
        return all(cluster_ok(server.port) for server in self.servers if server.alive())

    def _cli_cluster(self, *args: str) -> None:
        done = subprocess.run(
            ["redis-cli", "--cluster", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"redis-cli --cluster {args[0]}: {done.stdout[-2000:]}"

    def stop(self) -> None:
        for server in self.servers:
            server.kill()


def _serves(primary: RedisServer, slot: int, cluster: RedisClusterGroup) -> bool:
    return cluster.owner_of(slot, asked=primary) is primary
