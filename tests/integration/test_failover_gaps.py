"""A failover that loses messages: the promoted replica never got the last ones, which
clients already had. Ids stay unique, and every resume from before the loss, or from a
lost id, is told (`reset`, reason `failover`) where the lost messages would have been."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
import redis.asyncio as redis

from broadcaster.brokers.config import LibraryConfig
from broadcaster.brokers.redis import RedisBroker
from broadcaster.brokers.redis.client import connect
from broadcaster.brokers.redis.library import Library
from broadcaster.core.ids import EventId
from broadcaster.core.metrics import Counts
from broadcaster.core.publication import Publication
from tests.support.client import subscribe
from tests.support.eventsource import EventSource
from tests.support.nodes import StartApp
from tests.support.processes import RedisServer, caught_up, replicas_online
from tests.support.proxy import SwitchableProxy
from tests.support.publish import post, publish
from tests.support.wait import eventually, wait_until


async def test_lost_messages_are_told_and_ids_never_repeat(
    redis_pair: tuple[RedisServer, RedisServer], start_app: StartApp, session: aiohttp.ClientSession
) -> None:
    old, new = redis_pair
    await wait_until(lambda: replicas_online(old), 10, "the replica")
    async with SwitchableProxy(old.port) as proxy:
        base = await start_app(redis_url=f"redis://127.0.0.1:{proxy.port}", publish_token="t")

        stayed = EventSource(session, f"{base}/events?channel=x")
        try:
            await wait_until(lambda: stayed.connects == 1, 10, "a client")
            kept = [await publish(session, base, "x", f"m{n}") for n in range(3)]
            await wait_until(lambda: caught_up(old, new), 10, "the replica to catch up")
            # A partition: the replica is promoted while the old primary still takes
            # publishes (that clients get live) and dies before they could replicate.
            new.cli("REPLICAOF", "NO", "ONE")
            lost = [await publish(session, base, "x", f"lost{n}") for n in range(2)]
            await wait_until(lambda: len(stayed.events) == 5, 10, "the lost ones, live")
            old.kill()
            proxy.switch(new.port)

            # The client that stayed connected is told by its node's backfill.
            await wait_until(lambda: len(stayed.events) == 6, 20, "the node's notice")
            notice = stayed.events[5]
            assert notice.event == "reset"
            assert orjson.loads(notice.data) == {"channels": ["x"], "reason": "failover"}

            async def publishes() -> bool:
                status, _ = await post(session, base, {"channel": "x", "data": "probe"})
                return status == 200

            await eventually(publishes, 20, "publishing on the new primary")
            fresh = await publish(session, base, "x", "after")
            assert fresh not in lost and all(fresh > i for i in [*kept, *lost])
            gaps = new.cli("LRANGE", "sse:gaps", "0", "-1").split()
            assert gaps == [f"{kept[-1]}|{gaps[0].split('|')[1]}|{lost[-1]}"], gaps
        finally:
            await stayed.close()

        # Whoever resumes from before the loss, or from a lost id, gets the retained
        # messages and the notice where the lost ones were.
        for position, expected in (
            (kept[0], ["m1", "m2", "reset", "probe", "after"]),
            (kept[-1], ["reset", "probe", "after"]),
            (lost[0], ["reset", "probe", "after"]),
        ):
            headers = {"Last-Event-ID": position}
            async with subscribe(session, base, ["x"], headers=headers) as sub:
                events = await sub.wait_for(len(expected))
                shown = [e.event if e.event == "reset" else e.data for e in events]
                assert shown == expected, position


async def test_a_delivered_id_in_an_older_gap_is_recorded_too(redis_server: RedisServer) -> None:
    # Two take-overs in a row (each a new replication id, as a promoted replica has) make
    # two gaps. A node whose first reconnect comes after the second reports an id it
    # delivered inside the first: that gap must record it, not only the newest one.
    client = connect(redis_server.url)
    try:
        first = await publish_on(client, "before")
        make_take_over(redis_server)
        await publish_on(client, "after the first")
        make_take_over(redis_server)
        await publish_on(client, "after the second")
        gaps = redis_server.cli("LRANGE", "sse:gaps", "0", "-1").split()
        assert len(gaps) == 2, gaps
        inside = f"{first.ms}-{first.seq + 1}"  # delivered by the first primary, then lost
        assert await client.fcall("sse_seen", 0, inside) == 1
        older = redis_server.cli("LINDEX", "sse:gaps", "0").strip()
        assert older.endswith(f"|{inside}"), older
    finally:
        await client.aclose()


async def test_a_second_take_over_never_reissues_the_first_ones_ids(
    redis_server: RedisServer,
) -> None:
    # The replica promoted second never got the first take-over (Sentinel reconfigures
    # replicas one at a time): its META still ends at the old primary's last id. Its
    # ids must still sort after every id the first new primary issued.
    client = connect(redis_server.url)
    try:
        await publish_on(client, "on the old primary")
        stale = (
            redis_server.cli("HGET", "sse:meta", "ms").strip(),
            redis_server.cli("HGET", "sse:meta", "seq").strip(),
        )
        make_take_over(redis_server)
        first = await publish_on(client, "on the first new primary")
        # The second new primary: META as the old primary left it, a little later.
        redis_server.cli("HSET", "sse:meta", "ms", stale[0], "seq", stale[1])
        now = redis_server.cli("TIME").split()[0]
        await wait_until(lambda: redis_server.cli("TIME").split()[0] != now, 5, "a new second")
        make_take_over(redis_server)
        second = await publish_on(client, "on the second new primary")
        assert second > first, (first, second)
    finally:
        await client.aclose()


async def test_when_the_primary_was_last_checked_is_never_written_to_redis(
    redis_server: RedisServer,
) -> None:
    # A key noting the last check travelled in a full sync's RDB, and a promoted replica
    # whose clock is behind judged it unexpired: it skipped the check and continued the
    # old sequence. The function keeps that time in its own memory instead.
    client = connect(redis_server.url)
    try:
        await Library(LibraryConfig()).publish(client, [Publication.of("g", "one")])
    finally:
        await client.aclose()
    keys = redis_server.cli("KEYS", "*").split()
    assert sorted(keys) == ["sse:history:g", "sse:meta"], keys


async def publish_on(client: redis.Redis, data: str) -> EventId:
    """Publish `data` on channel `g` through the function library; its id."""
    [sent] = await Library(LibraryConfig()).publish(client, [Publication.of("g", data)])
    position = EventId.parse(sent)
    assert position is not None
    return position


def make_take_over(server: RedisServer) -> None:
    """Make the next publish see another replication id, as on a promoted replica."""
    server.cli("HSET", "sse:meta", "replid", "another")
    server.cli("FUNCTION", "DELETE", "broadcaster")  # reloaded: it checks at once


async def test_a_report_the_primary_refuses_for_want_of_replicas_is_made_later(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A new primary whose replicas are not back yet refuses writes (`min-replicas-to-
    # write`), `sse_seen` too: the node reports what it delivered once it can, or a
    # resume from before the gap would not learn that a lost message reached clients.
    counts = Counts()
    broker = RedisBroker.from_url(redis_server.url, counts=counts)
    client = connect(redis_server.url)
    received: list[str] = []
    try:
        await broker.start(lambda _, message: received.append(message.data))
        await broker.subscribe("g")
        delivered = await publish_on(client, "m")
        await wait_until(lambda: received == ["m"], 10, "the message, live")
        after, before = EventId(delivered.ms, delivered.seq - 1), EventId(delivered.ms + 1, 0)
        untold = f"{after}|{before}|{after}"  # a gap around it, nothing seen in it yet
        redis_server.cli("RPUSH", "sse:gaps", untold)
        redis_server.cli("CONFIG", "SET", "min-replicas-to-write", "1")
        redis_server.cli("CLIENT", "KILL", "TYPE", "pubsub")
        await wait_until(lambda: counts.redis_reconnects == 1 and broker.connected, 10, "back")
        assert redis_server.cli("LINDEX", "sse:gaps", "0").strip() == untold  # refused
        redis_server.cli("CONFIG", "SET", "min-replicas-to-write", "0")
        told = f"{after}|{before}|{delivered}"
        await wait_until(
            lambda: redis_server.cli("LINDEX", "sse:gaps", "0").strip() == told, 10, "the report"
        )
        assert "Redis 7+ needed" not in caplog.text  # the library's load was refused too
    finally:
        await broker.close()
        await client.aclose()
