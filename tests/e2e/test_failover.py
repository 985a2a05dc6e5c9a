"""A node killed with SIGKILL: its clients resume through another node and lose nothing."""

from __future__ import annotations

import signal

import aiohttp
import redis.asyncio as redis

from tests.support.client import subscribe
from tests.support.nodes import StartNode
from tests.support.processes import RedisServer
from tests.support.publish import fcall
from tests.support.sse import Event
from tests.support.wait import wait_until


async def test_clients_of_a_killed_node_resume_on_another(
    redis_server: RedisServer, start_node: StartNode
) -> None:
    doomed, survivor = start_node(redis_server.url), start_node(redis_server.url)
    async with aiohttp.ClientSession() as session, redis.Redis.from_url(redis_server.url) as client:
        published = []
        async with subscribe(session, doomed.url, ["a", "b"]) as sub:
            for n in range(10):
                published.append(await fcall(client, "ab"[n % 2], f"before {n}"))
            await sub.wait_for(10)
            doomed.signal(signal.SIGKILL)
            await wait_until(sub.ended.is_set, 10, "the stream to break")
            last_id = sub.parser.last_event_id
        for n in range(10):
            published.append(await fcall(client, "ab"[n % 2], f"while away {n}"))
        async with subscribe(session, survivor.url, ["a", "b"], {"Last-Event-ID": last_id}) as sub:
            published.append(await fcall(client, "a", "live"))
            events = await sub.wait_for(11)
        assert [e.id for e in events] == published[10:]
        assert events[0] == Event("while away 0", id=published[10])
