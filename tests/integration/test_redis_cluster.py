"""The local Redis Cluster that `broadcaster cluster` and the tests run: every slot served
by three primaries with a replica each, and sharded pub/sub inside the owning shard."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.redis_cluster import RedisClusterGroup

pytestmark = pytest.mark.slow


def test_three_primaries_with_a_replica_each_serve_every_slot(
    redis_cluster: RedisClusterGroup,
) -> None:
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    for primary in primaries:
        assert primary.cli("ROLE").splitlines()[0] == "master"
        assert "connected_slaves:1" in primary.cli("INFO", "replication")
    # Keys of one tag share a slot, so its owner holds them all; other tags spread.
    owners = {redis_cluster.owner(f"{{room{n}}}").port for n in range(12)}
    assert len(owners) == 3
    assert redis_cluster.owner("{room7}chat") is redis_cluster.owner("sse:{room7}:meta")


def test_a_sharded_message_reaches_a_subscriber_on_the_owning_shard(
    redis_cluster: RedisClusterGroup,
) -> None:
    owner = redis_cluster.owner("{room7}chat")
    listener = subprocess.Popen(
        ["redis-cli", "-p", str(owner.port), "SSUBSCRIBE", "{room7}chat"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        for expected in ("ssubscribe", "{room7}chat", "1"):
            assert listener.stdout.readline().strip() == expected
        # Published through any node (-c follows MOVED to the owner).
        other = next(s for s in redis_cluster.servers if s is not owner)
        other.cli("-c", "SPUBLISH", "{room7}chat", "hello")
        for expected in ("smessage", "{room7}chat", "hello"):
            assert listener.stdout.readline().strip() == expected
    finally:
        listener.kill()
        listener.wait()
