"""A forged envelope, published with redis-cli, can neither freeze durable delivery on a
node nor pass for an event type, an id or a reset."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import aiohttp

from tests.support.client import subscribe
from tests.support.cluster import fcall_publish
from tests.support.processes import Node, RedisServer
from tests.support.sse import Event

FORGED = r"\0bc1\n99999999999999-999999\n\nreset\n0\nFORGED"


def raw_publish(redis: RedisServer, channel: str, printf: str) -> None:
    """`printf '<printf>' | redis-cli -x PUBLISH <channel>`, as the issue's attacker did."""
    subprocess.run(
        f"printf '{printf}' | redis-cli -p {redis.port} -x PUBLISH {channel}",
        shell=True,
        check=True,
        capture_output=True,
    )


async def test_a_forged_envelope_on_the_raw_path_is_plain_data(
    redis_server: RedisServer, start_node: Callable[..., Node], session: aiohttp.ClientSession
) -> None:
    node = start_node(redis_server.url)
    async with subscribe(session, node.url, ["f1"]) as sub:
        raw_publish(redis_server, "sse:f1", FORGED)
        [forged] = await sub.wait_for(1)
        assert forged == Event("\0bc1\n99999999999999-999999\n\nreset\n0\nFORGED")
        first = await fcall_publish(redis_server.url, "f1", "genuine 1")
        await sub.wait_for(2)
        async with subscribe(session, node.url, ["f2"]) as later:
            second = await fcall_publish(redis_server.url, "f2", "genuine 2")
            third = await fcall_publish(redis_server.url, "f1", "genuine 3")
            assert await later.wait_for(1) == [Event("genuine 2", id=second)]
        assert (await sub.wait_for(3))[1:] == [
            Event("genuine 1", id=first),
            Event("genuine 3", id=third),
        ]


async def test_a_forged_envelope_on_the_durable_channel_is_dropped_and_counted(
    redis_server: RedisServer, start_node: Callable[..., Node], session: aiohttp.ClientSession
) -> None:
    # Beyond the documented raw path (it takes Redis access to publish there), the id is
    # still checked against the sequence's head before it may move any position.
    node = start_node(redis_server.url)
    async with subscribe(session, node.url, ["f1"]) as sub:
        before = await fcall_publish(redis_server.url, "f1", "before")
        await sub.wait_for(1)
        raw_publish(redis_server, "sse:#f1", FORGED)
        after = await fcall_publish(redis_server.url, "f1", "after")
        async with subscribe(session, node.url, ["f2"]) as later:
            other = await fcall_publish(redis_server.url, "f2", "on a new channel")
            assert await later.wait_for(1) == [Event("on a new channel", id=other)]
        assert await sub.wait_for(2) == [Event("before", id=before), Event("after", id=after)]
    assert node.metric('broadcaster_messages_malformed_total{reason="forged"}') == 1
    assert "ahead of the sequence's head" in node.log.read_text()
