"""The subjects of the broker contract: each broker, started, recording what it delivers.
On the cluster, a case's channels share one `{tag}` (one group: one sequence, as on a
single Redis), and the case names them through `Subject.ch`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from broadcaster.brokers.config import LibraryConfig
from broadcaster.brokers.memory import MemoryBroker
from broadcaster.brokers.protocol import Broker
from broadcaster.brokers.redis import RedisBroker
from broadcaster.brokers.redis.cluster_broker import ClusterBroker
from broadcaster.core.message import Message
from broadcaster.core.publication import Publication
from tests.support.processes import RedisServer
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.wait import wait_until

MAXLEN = 5


@dataclass
class Subject:
    """A started broker and everything it delivered."""

    broker: Broker
    delivered: list[tuple[str, Message]] = field(default_factory=list)
    redis_url: str | None = None
    cluster: RedisClusterGroup | None = None
    tag: str = ""

    def ch(self, name: str) -> str:
        """The name of the case's channel `name` on this broker (one group per case)."""
        return self.tag + name

    def deliver(self, channel: str, message: Message) -> None:
        self.delivered.append((channel, message))

    async def publish(self, channel: str, data: str, key: str | None = None) -> str:
        [sent] = await self.broker.publish([Publication(channel, data, None, key)])
        return sent

    async def received(self, count: int) -> list[tuple[str, str]]:
        """(channel, data) of the first `count` deliveries, once they are in."""
        await wait_until(lambda: len(self.delivered) >= count, 10, f"{count} deliveries")
        return [(channel, message.data) for channel, message in self.delivered]


BROKERS = ["memory", "redis", "cluster"]


def make_subject(
    request: pytest.FixtureRequest, config: LibraryConfig, max_replay_bytes: int = 4 << 20
) -> Subject:
    """The broker `request.param` names, with `config`, on a fresh server."""
    if request.param == "memory":
        return Subject(MemoryBroker(config=config, max_replay_bytes=max_replay_bytes))
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        broker = RedisBroker.from_url(server.url, config=config, max_replay_bytes=max_replay_bytes)
        return Subject(broker, redis_url=server.url)
    cluster: RedisClusterGroup = request.getfixturevalue("clean_redis_cluster")
    sharded = ClusterBroker.from_url(cluster.url, config=config, max_replay_bytes=max_replay_bytes)
    return Subject(sharded, cluster=cluster, tag="{t}")


@pytest.fixture(params=BROKERS)
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    subject = make_subject(request, LibraryConfig(history_maxlen=MAXLEN))
    await subject.broker.start(subject.deliver)
    yield subject
    await subject.broker.close()
