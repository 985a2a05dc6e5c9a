"""A Redis outage: clients stay, heartbeats go on, subscriptions come back, one log line."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from broadcaster import create_app
from broadcaster.settings import Settings
from tests.support.client import subscribe
from tests.support.nodes import StartApp
from tests.support.processes import RedisServer
from tests.support.publish import fcall, post
from tests.support.sse import Event
from tests.support.wait import eventually, wait_until


async def test_node_rides_out_a_redis_outage(
    redis_server: RedisServer, start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broadcaster")
    base = await start_app(redis_url=redis_server.url, heartbeat_interval=0.1)

    async with aiohttp.ClientSession() as session:

        async def readiness() -> int:
            async with session.get(f"{base}/readyz") as answer:
                return answer.status

        async def ready() -> bool:
            return await readiness() == 200

        async def unready() -> bool:
            return await readiness() == 503

        async with subscribe(session, base, ["news"]) as sub:
            redis_server.cli("PUBLISH", "sse:news", "before")
            await sub.wait_for(1)

            redis_server.kill()
            await eventually(unready, 10, "readyz to turn 503")
            beats = sub.parser.comments
            await wait_until(lambda: sub.parser.comments >= beats + 8, 10, "heartbeats")
            assert not sub.ended.is_set()

            redis_server.start()
            await eventually(ready, 20, "readyz to turn 200 again")
            assert redis_server.cli("PUBSUB", "NUMSUB", "sse:news").split() == ["sse:news", "1"]
            redis_server.cli("PUBLISH", "sse:news", "after")
            assert await sub.wait_for(2) == [Event("before"), Event("after")]
            assert not sub.ended.is_set()

    outage_lines = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
    assert len(outage_lines) == 1
    assert any("redis reconnected" in r.getMessage() for r in caplog.records)


async def test_a_node_stops_promptly_while_redis_is_going_away(redis_server: RedisServer) -> None:
    for _ in range(5):
        server = TestServer(create_app(Settings(redis_url=redis_server.url)))
        await server.start_server()
        redis_server.kill()  # the link breaks just as the node is told to stop
        await asyncio.wait_for(server.close(), 10)
        redis_server.start()


@pytest.mark.parametrize("loop_name", ["pubsub-reader", "pubsub-writer"])
async def test_a_pubsub_loop_ending_cancelled_reconnects(
    redis_server: RedisServer, start_app: StartApp, loop_name: str
) -> None:
    # Python 3.11's asyncio.timeout, inside redis-py's reads, can leave a stray cancellation
    # that ends the reader cancelled (and redis-py closes the connection). A TaskGroup
    # ignores such a child: the session then waited on the writer forever, unsubscribed.
    base = await start_app(redis_url=redis_server.url)
    async with aiohttp.ClientSession() as session, subscribe(session, base, ["news"]) as sub:
        first_link = redis_server.cli("CLIENT", "LIST", "TYPE", "pubsub").split()[0]
        [task] = [t for t in asyncio.all_tasks() if t.get_name() == loop_name]
        task.cancel()

        async def resubscribed() -> bool:
            links = redis_server.cli("CLIENT", "LIST", "TYPE", "pubsub").split()
            return bool(links) and links[0] != first_link

        await eventually(resubscribed, 10, "a new pub/sub connection")
        await eventually(
            lambda: asyncio.sleep(
                0, redis_server.cli("PUBSUB", "NUMSUB", "sse:news").split()[1] == "1"
            ),
            10,
            "the channel resubscribed",
        )
        redis_server.cli("PUBLISH", "sse:news", "after")
        assert await sub.wait_for(1) == [Event("after")]


async def test_a_resume_while_the_link_is_down_waits_for_it_and_costs_nobody_anything(
    redis_server: RedisServer, start_app: StartApp
) -> None:
    # As in a failover, history answers while the pub/sub link cannot come back (here:
    # Redis takes no new connection). A client that resumes meanwhile is refused (503,
    # like /readyz) until the link is back: the node could confirm no subscription. The
    # node's other client of the channel still gets what was published during the
    # outage, from the backfill, and the resumed one gets it once.
    base = await start_app(redis_url=redis_server.url, publish_token="t")
    admin = Redis.from_url(redis_server.url, single_connection_client=True)
    try:
        async with (
            aiohttp.ClientSession() as session,
            subscribe(session, base, ["news"]) as stayed,
        ):
            _, sent = await post(session, base, {"channel": "news", "data": "m1"})
            first = sent["id"]
            await stayed.wait_for(1)

            clients = int((await admin.info("clients"))["connected_clients"])
            await admin.config_set("maxclients", clients)  # these stay; no new one
            await admin.client_kill_filter(_type="pubsub")
            for data in ("m2", "m3"):
                await fcall(admin, "news", data)

            resume = {"Last-Event-ID": first}
            params = {"channel": "news"}

            async def refused() -> bool:
                async with session.get(f"{base}/events", params=params, headers=resume) as r:
                    text = await r.text()
                    return r.status == 503 and text.startswith("broker unavailable")

            await eventually(refused, 10, "the resume refused while the link is down")
            await admin.config_set("maxclients", 10_000)

            async def relinked() -> bool:
                numsub = await admin.pubsub_numsub("sse:news")
                return bool(numsub and numsub[0][1] == 1)

            await eventually(relinked, 20, "the link to come back")
            async with subscribe(session, base, ["news"], headers=resume) as resumed:
                await fcall(admin, "news", "m4")
                await stayed.wait_for(4)
                await resumed.wait_for(3)
                assert [e.data for e in stayed.events] == ["m1", "m2", "m3", "m4"]
                assert [e.data for e in resumed.events] == ["m2", "m3", "m4"]
    finally:
        await admin.aclose()
