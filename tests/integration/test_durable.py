"""Durable delivery on a real redis-server: resume anywhere, under faults, nothing lost or twice."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack

import aiohttp
import pytest
import redis.asyncio as redis

from broadcaster.brokers.config import LibraryConfig
from broadcaster.brokers.protocol import CLOSED_REASON
from broadcaster.brokers.redis import RedisBroker
from broadcaster.brokers.redis.library import Library
from broadcaster.core.history import Start
from broadcaster.core.ids import EventId
from tests.support.client import Subscriber, subscribe
from tests.support.nodes import StartApp
from tests.support.processes import RedisServer
from tests.support.publish import fcall
from tests.support.sse import Event
from tests.support.wait import eventually

Published = list[tuple[str, str]]  # (channel, id) in publish order


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    async with redis.Redis.from_url(redis_server.url) as client:
        yield client


def expected_after(published: Published, channels: Sequence[str], after: str | None) -> list[str]:
    start = EventId.parse(after) if after else None
    return [
        id_
        for channel, id_ in published
        if channel in channels and (start is None or EventId.parse(id_) > start)  # type: ignore[operator]
    ]


async def received_ids(sub: Subscriber, count: int, timeout: float = 20) -> list[str]:
    return [event.id for event in await sub.wait_for(count, timeout)]


async def test_resume_on_another_node(
    redis_server: RedisServer,
    start_app: StartApp,
    session: aiohttp.ClientSession,
    client: redis.Redis,
) -> None:
    nodes = [await start_app(redis_url=redis_server.url) for _ in range(2)]
    async with subscribe(session, nodes[0], ["news"]) as sub:
        ids = [await fcall(client, "news", f"m{n}", "note") for n in range(3)]
        events = await sub.wait_for(3)
        assert events == [Event(f"m{n}", "note", ids[n]) for n in range(3)]
    missed = [await fcall(client, "news", f"m{n}") for n in range(3, 6)]
    async with subscribe(session, nodes[1], ["news"], headers={"Last-Event-ID": ids[-1]}) as sub:
        live = await fcall(client, "news", "live")
        assert await sub.wait_for(4) == [
            *(Event(f"m{n}", id=id_) for n, id_ in zip(range(3, 6), missed, strict=True)),
            Event("live", id=live),
        ]


async def test_multi_channel_resume_with_ids_tied_on_the_millisecond(
    redis_server: RedisServer,
    start_app: StartApp,
    session: aiohttp.ClientSession,
    client: redis.Redis,
) -> None:
    nodes = [await start_app(redis_url=redis_server.url) for _ in range(2)]
    channels = ["x", "y", "z"]
    async with subscribe(session, nodes[0], channels) as watcher:
        async with client.pipeline(transaction=False) as pipe:
            for n in range(300):
                pipe.fcall("sse_publish", 1, channels[n % 3], f"{n}")
            ids = [raw.decode() for raw in await pipe.execute()]
        seen = await received_ids(watcher, 300)
    assert seen == ids
    millis = [EventId.parse(id_).ms for id_ in ids]  # type: ignore[union-attr]
    assert len(set(millis)) < len(millis) / 3, "publishes should share milliseconds"
    published = [(channels[n % 3], id_) for n, id_ in enumerate(ids)]
    for cut in (0, 101, 250, 299):
        for wanted in (channels, ["y"], ["x", "z"]):
            headers = {"Last-Event-ID": ids[cut]}
            async with subscribe(session, nodes[1], wanted, headers=headers) as sub:
                expected = expected_after(published, wanted, ids[cut])
                if expected:
                    assert await received_ids(sub, len(expected)) == expected
                marker = await fcall(client, wanted[0], "marker")
                assert (await sub.wait_for(len(expected) + 1))[-1].id == marker
            published.append((wanted[0], marker))


@pytest.mark.slow
async def test_publish_storm_during_replay(
    redis_server: RedisServer,
    start_app: StartApp,
    session: aiohttp.ClientSession,
    client: redis.Redis,
) -> None:
    nodes = [await start_app(redis_url=redis_server.url, history_maxlen=5000) for _ in range(2)]
    channels = ["s0", "s1", "s2"]
    published: Published = []
    rng = random.Random(3)
    for n in range(200):
        channel = channels[n % 3]
        published.append((channel, await fcall(client, channel, f"warm {n}")))

    async def storm() -> None:
        for n in range(1500):
            channel = rng.choice(channels)
            published.append((channel, await fcall(client, channel, f"storm {n}")))

    async with AsyncExitStack() as stack:
        storming = asyncio.create_task(storm())
        resumers: list[tuple[list[str], str, Subscriber]] = []
        while not storming.done():
            # Each resumer's replay is read while the storm keeps publishing.
            wanted = rng.sample(channels, rng.randint(1, 3))
            after = published[rng.randrange(len(published))][1]
            node = nodes[len(resumers) % 2]
            headers = {"Last-Event-ID": after}
            sub = await stack.enter_async_context(subscribe(session, node, wanted, headers))
            resumers.append((wanted, after, sub))
        await storming
        for wanted, after, sub in resumers:
            expected = expected_after(published, wanted, after)
            got = await received_ids(sub, len(expected), timeout=30)
            assert got == expected, f"resumed after {after} on {wanted}"
    assert len(resumers) >= 10


async def test_no_loss_when_redis_kills_the_pubsub_connection(
    redis_server: RedisServer,
    start_app: StartApp,
    session: aiohttp.ClientSession,
    client: redis.Redis,
) -> None:
    base = await start_app(redis_url=redis_server.url)
    published: Published = []

    async def resubscribed() -> bool:
        return dict(await client.pubsub_numsub("sse:k1", "sse:k2")) == {b"sse:k1": 1, b"sse:k2": 1}

    async with (
        subscribe(session, base, ["k1"]) as one,
        subscribe(session, base, ["k1", "k2"]) as both,
    ):
        for round_ in range(5):
            for n in range(40):
                channel = "k1" if n % 2 else "k2"
                published.append((channel, await fcall(client, channel, f"{round_}/{n}")))
                if n == 20:
                    await eventually(resubscribed, 10, "the node to resubscribe")
                    assert await client.client_kill_filter(_type="pubsub") == 1
        assert await received_ids(one, 100) == expected_after(published, ["k1"], None)
        got = await received_ids(both, 200)
        want = expected_after(published, ["k1", "k2"], None)
        print("GOT ", [g.split("-")[1] for g in got][:60])
        print("WANT", [w.split("-")[1] for w in want][:60])
        assert got == want


async def test_acknowledged_messages_survive_a_redis_crash_with_aof(
    tmp_path_factory: pytest.TempPathFactory,
    start_app: StartApp,
    session: aiohttp.ClientSession,
) -> None:
    server = RedisServer(
        tmp_path_factory.mktemp("aof"), "--appendonly", "yes", "--appendfsync", "always"
    )
    server.start()
    try:
        base = await start_app(redis_url=server.url)
        async with redis.Redis.from_url(server.url) as client:
            before = [await fcall(client, "a", f"b{n}") for n in range(50)]
        server.kill()  # SIGKILL: only what was fsynced survives
        server.start()
        resume = {"Last-Event-ID": before[0]}
        async with (
            redis.Redis.from_url(server.url) as client,
            subscribe(session, base, ["a"], headers=resume) as sub,
        ):
            after = [await fcall(client, "a", f"a{n}") for n in range(5)]
            assert await received_ids(sub, 54) == before[1:] + after
        ids = [EventId.parse(id_) for id_ in before + after]
        assert ids == sorted(ids), "ids keep increasing across the crash"  # type: ignore[type-var]
    finally:
        server.kill()


async def test_sse_publish_refuses_bad_input(
    start_app: StartApp, redis_server: RedisServer
) -> None:
    await start_app(redis_url=redis_server.url)  # a node loads the function at start
    for args, reason in [
        (["1", "bad name", "x"], "channel name must be"),
        (["1", "{{room}x}", "x"], "at most one {tag}"),
        (["1", "{room7}chat", "x"], r"^\d+-\d+$"),  # a hash tag is a valid name: an id
        (["1", "ok", "x", "bad\nevent"], "event must not contain"),
        (["1", "ok"], "usage: FCALL sse_publish"),
    ]:
        done = await asyncio.create_subprocess_exec(
            "redis-cli",
            "-p",
            str(redis_server.port),
            "FCALL",
            "sse_publish",
            *args,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await done.communicate()
        assert re.search(reason, out.decode().strip()), out


async def test_a_raw_publish_is_live_only(
    redis_server: RedisServer,
    start_app: StartApp,
    session: aiohttp.ClientSession,
    client: redis.Redis,
) -> None:
    base = await start_app(redis_url=redis_server.url)
    first = await fcall(client, "r", "durable")
    async with subscribe(session, base, ["r"]) as sub:
        await client.publish("sse:r", "raw")
        assert await sub.wait_for(1) == [Event("raw")]
    last = await fcall(client, "r", "durable again")
    async with subscribe(session, base, ["r"], headers={"Last-Event-ID": first}) as sub:
        assert await sub.wait_for(1) == [Event("durable again", id=last)]
        assert await client.xlen("sse:history:r") == 2


async def test_a_reconnect_storm_reads_each_history_range_once(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    broker = RedisBroker.from_url(redis_server.url)
    await broker.start(lambda channel, message: None)
    try:
        await broker.subscribe("storm")
        first = await fcall(client, "storm", "seen")
        missed = [await fcall(client, "storm", f"m{n}") for n in range(100)]
        before = (await client.info("commandstats")).get("cmdstat_fcall_ro", {}).get("calls", 0)
        start = Start.resume(first)
        replays = await asyncio.gather(*(broker.replay(["storm"], start) for _ in range(50)))
        after = (await client.info("commandstats"))["cmdstat_fcall_ro"]["calls"]
        assert after - before == 1  # one page read: the whole replay, under PAGE_BYTES
        assert all([m.id for _, m in r.messages] == missed for r in replays)
        assert len({id(r.frames()) for r in replays}) == 1  # encoded once, shared
    finally:
        await broker.close()


async def test_a_stream_lives_its_ttl_after_every_publish_without_an_expire_each(
    redis_server: RedisServer,
) -> None:
    """HISTORY_TTL 2 s: every publish leaves its stream at least 2 s to live (read in the
    same transaction), though only the first publish in each tenth of the TTL (here, the
    one-second floor) writes an expiry."""
    library = Library(LibraryConfig(history_ttl=2))
    async with redis.Redis.from_url(redis_server.url) as client:
        await library.load(client, replace=True)
        await client.config_resetstat()
        loop = asyncio.get_running_loop()
        ends, publishes = loop.time() + 2.5, 0  # (the workload: publishes over 2.5 s)
        while loop.time() < ends:
            async with client.pipeline(transaction=True) as pipe:
                pipe.fcall("sse_publish", 1, "ttl", "x")
                pipe.pttl("sse:history:ttl")
                _, left = await pipe.execute()
            assert 2000 <= left <= 3000, left
            publishes += 1
            await asyncio.sleep(0.02)  # (the publish rate)
        expiries = (await client.info("commandstats"))["cmdstat_pexpireat"]["calls"]
    assert publishes > 20 and 2 <= expiries <= 4, (publishes, expiries)


async def test_redis_cli_publishes_a_batch_in_one_call(redis_server: RedisServer) -> None:
    async with redis.Redis.from_url(redis_server.url) as client:
        await Library().load(client, replace=True)
    batch = ["2", "", "a", "x", "", "", "", "b", "y", "note", "k", ""]
    sent = redis_server.cli("FCALL", "sse_publish_batch", "1", "a", *batch).split()
    assert len(sent) == 2 and EventId.parse(sent[0]) < EventId.parse(sent[1])  # type: ignore[operator]
    assert (
        redis_server.cli(
            "FCALL", "sse_publish_batch", "1", "b", "1", "", "b", "z", "", "k", ""
        ).strip()
        == sent[1]
    )
    bad = ["2", "", "a", "1", "", "", "", "no space", "2", "", "", ""]
    refused = redis_server.cli("FCALL", "sse_publish_batch", "1", "a", *bad)
    assert "channel name must be" in refused
    assert redis_server.cli("XLEN", "sse:history:a").strip() == "1", "nothing of a refused batch"
    assert "usage" in redis_server.cli(
        "FCALL", "sse_publish_batch", "1", "a", "2", "", "a", "x", "", "", ""
    )
    closing = ["2", "", "a", "last", "done", "", "close", "a", "late", "", "", ""]
    answer = redis_server.cli("FCALL", "sse_publish_batch", "1", "a", *closing)
    [last, refused] = answer.split("\n", 1)
    assert EventId.parse(last) is not None and "channel is closed" in refused


def test_redis_cli_closes_and_reopens_a_channel(redis_server: RedisServer) -> None:
    cli = redis_server.cli
    assert "Function not found" in cli("FCALL", "sse_publish", "1", "c", "x")
    asyncio.run(_load(redis_server))
    cli("FCALL", "sse_publish", "1", "c", "hello")
    bye = cli("FCALL", "sse_publish", "1", "c", "bye", "done", "", "close").strip()
    assert cli("XREVRANGE", "sse:history:c", "+", "-", "COUNT", "1").split()[-2:] == ["c", "1"]
    assert cli("FCALL", "sse_publish", "1", "c", "late").strip() == f"ERR {CLOSED_REASON}"
    assert "flags are words of" in cli("FCALL", "sse_publish", "1", "c", "x", "", "", "shut")
    again = cli("FCALL", "sse_publish", "1", "c", "again", "", "", "reopen").strip()
    assert EventId.parse(again) > EventId.parse(bye)  # type: ignore[operator]
    cli("FCALL", "sse_publish", "1", "c", "more")  # open again


async def _load(server: RedisServer) -> None:
    async with redis.Redis.from_url(server.url) as client:
        await Library().load(client, replace=True)


async def test_a_publish_redis_refuses_leaves_no_idempotency_key(redis_server: RedisServer) -> None:
    """The key is remembered before the XADD (SET NX GET): should the XADD be refused (here
    the stream holds a newer id, written by something else), the key goes too, so a retry
    publishes instead of answering an id that names nothing."""
    async with redis.Redis.from_url(redis_server.url) as client:
        await Library().load(client, replace=True)
        await client.xadd("sse:history:f", {"d": "alien"}, id="99999999999999-1")
        with pytest.raises(redis.ResponseError, match="equal or smaller"):
            await client.fcall("sse_publish", 1, "f", "x", "", "k")
        assert await client.exists("sse:idem:f k") == 0
        await client.delete("sse:history:f")
        sent = (await client.fcall("sse_publish", 1, "f", "x", "", "k")).decode()
        assert await client.xlen("sse:history:f") == 1
        assert await client.get("sse:idem:f k") == sent.encode()
        assert (await client.fcall("sse_publish", 1, "f", "again", "", "k")).decode() == sent


def test_a_message_redis_refuses_mid_batch_costs_the_others_no_id(
    redis_server: RedisServer,
) -> None:
    # A history key of another type makes its XADD fail: that message gets the error in
    # its place, the others are published, and the sequence still records their ids.
    asyncio.run(_load(redis_server))
    cli = redis_server.cli
    cli("SET", "sse:history:bad", "not a stream")
    batch = ["3", "", "a", "1", "", "", "", "bad", "2", "", "k", "", "a", "3", "", "", ""]
    answer = cli("FCALL", "sse_publish_batch", "1", "a", *batch).splitlines()
    first, refused, third = [line for line in answer if line]
    assert "WRONGTYPE" in refused and cli("EXISTS", "sse:idem:bad k").strip() == "0"
    after = cli("FCALL", "sse_publish", "1", "b", "4").strip()
    ids = [EventId.parse(sent) for sent in (first, third, after)]
    assert ids == sorted(ids) and len(set(ids)) == 3  # type: ignore[type-var]


def test_a_call_key_makes_a_batch_call_idempotent(redis_server: RedisServer) -> None:
    # A repeat of the call answers its first replies, errors in place, and publishes
    # nothing; the messages' own keys still count across calls.
    asyncio.run(_load(redis_server))
    cli = redis_server.cli
    cli("FCALL", "sse_publish", "1", "shut", "bye", "", "", "close")
    call = ["3", "c-1", "a", "1", "", "own", "", "shut", "2", "", "", "", "a", "3", "", "", ""]
    first = [line for line in cli("FCALL", "sse_publish_batch", "1", "a", *call).splitlines()]
    again = [line for line in cli("FCALL", "sse_publish_batch", "1", "a", *call).splitlines()]
    assert first == again and "channel is closed" in first[1], first
    assert cli("XLEN", "sse:history:a").strip() == "2"
    other_call = ["1", "c-2", "a", "1 again", "", "own", ""]
    assert cli("FCALL", "sse_publish_batch", "1", "a", *other_call).strip() == first[0]
    assert "idempotency key must be" in cli("FCALL", "sse_publish_batch", "1", "a", "0", "a b")
