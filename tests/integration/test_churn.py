"""Concurrent first and last subscribers on a real Redis never leave a wrong subscription."""

from __future__ import annotations

import asyncio
import random

import aiohttp

from tests.support.client import subscribe
from tests.support.nodes import StartApp
from tests.support.processes import RedisServer
from tests.support.sse import Event
from tests.support.wait import eventually


async def test_subscription_churn_settles_to_the_truth(
    redis_server: RedisServer, start_app: StartApp
) -> None:
    base = await start_app(redis_url=redis_server.url)
    rng = random.Random(7)

    def numsub() -> int:
        return int(redis_server.cli("PUBSUB", "NUMSUB", "sse:churn").split()[1])

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def visit() -> None:
            # Connect, sometimes stay a moment, leave: first/last transitions overlap.
            async with subscribe(session, base, ["churn"]):
                for _ in range(rng.randint(0, 3)):
                    await asyncio.sleep(0)

        for _ in range(5):
            await asyncio.gather(*(visit() for _ in range(60)))

        async def settled_to_zero() -> bool:
            return numsub() == 0

        await eventually(settled_to_zero, 10, "no subscription once everyone left")

        async with subscribe(session, base, ["churn"]) as last:
            assert numsub() == 1
            redis_server.cli("PUBLISH", "sse:churn", "after the storm")
            assert await last.wait_for(1) == [Event("after the storm")]
