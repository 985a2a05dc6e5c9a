"""The subjects of the broker contract: each broker, started, recording what it delivers.
On the cluster, a case's channels share one `{tag}` (one group: one sequence, as on a
single Redis), and the case names them through `Subject.ch`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as redis

from broadcaster.brokers.config import LibraryConfig
from broadcaster.brokers.memory import MemoryBroker
from broadcaster.brokers.protocol import Broker
from broadcaster.brokers.redis import RedisBroker
from broadcaster.brokers.redis.cluster_broker import ClusterBroker
from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.core.message import Message
from broadcaster.core.publication import Publication
from tests.support.processes import RedisServer
from tests.support.redis_cluster import RedisClusterGroup
from tests.support.wait import wait_until

MAXLEN = 5
LOSE = """
local meta, key = KEYS[1], KEYS[2]
local seq = redis.call('HINCRBY', meta, 'seq', 1)
local id = redis.call('HGET', meta, 'ms') .. '-' .. seq
local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
if ARGV[2] == 'c' then
  redis.call('XADD', key, id, 'd', ARGV[1], 'e', '', 'p', newest[1][1], 'c', '1')
else
  redis.call('XADD', key, id, 'd', ARGV[1], 'e', '', 'p', newest[1][1])
end
return id
"""


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

    async def lose(self, channel: str, data: str, *, closes: bool = False) -> None:
        """Store a message of `channel` as `sse_publish` does, but never publish it: one
        that pub/sub dropped (Redis brokers only)."""
        keys = KeySpace("sse:", clustered=self.cluster is not None)
        url = self.redis_url if self.cluster is None else self.cluster.owner(channel).url
        assert url is not None
        async with redis.Redis.from_url(url) as client:
            meta, history = keys.meta(channel), keys.history(channel)
            await client.eval(LOSE, 2, meta, history, data, "c" if closes else "")

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
