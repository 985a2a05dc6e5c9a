"""The four Python publishers (async and sync, through Redis and through a node), on a
real redis-server and a real node: the same surface, the same results."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as redis

from broadcaster import (
    ChannelClosed,
    HttpPublisher,
    Publication,
    Publisher,
    PublishError,
    RedisPublisher,
    SyncHttpPublisher,
    SyncPublisher,
    SyncRedisPublisher,
)
from broadcaster.brokers.protocol import CLOSED_REASON
from tests.support.client import subscribe
from tests.support.processes import Node, RedisServer
from tests.support.proxy import ReplyDroppingProxy
from tests.support.sse import Event

KINDS = ["redis", "http", "sync-redis", "sync-http"]


class Under:
    """A publisher under test, behind one async surface (sync ones run in a thread)."""

    def __init__(self, publisher: Publisher | SyncPublisher) -> None:
        self.publisher = publisher

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(self.publisher, method)
        if isinstance(self.publisher, SyncPublisher):
            return await asyncio.to_thread(functools.partial(bound, *args, **kwargs))
        return await bound(*args, **kwargs)

    async def close(self) -> None:
        if isinstance(self.publisher, SyncPublisher):
            self.publisher.close()
        else:
            await self.publisher.aclose()


def make(kind: str, redis_port: int, node_port: int, **options: Any) -> Under:
    redis_url, node_url = f"redis://127.0.0.1:{redis_port}", f"http://127.0.0.1:{node_port}"
    makers: dict[str, Callable[[], Publisher | SyncPublisher]] = {
        "redis": lambda: RedisPublisher.from_url(redis_url, **options),
        "http": lambda: HttpPublisher(node_url, "t", **options),
        "sync-redis": lambda: SyncRedisPublisher.from_url(redis_url, **options),
        "sync-http": lambda: SyncHttpPublisher(node_url, "t", **options),
    }
    return Under(makers[kind]())


@pytest.fixture
def node(redis_server: RedisServer, start_node: Callable[..., Node]) -> Node:
    return start_node(redis_server.url, publish_token="t")


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    async with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        yield client


@pytest.fixture(params=KINDS)
async def under(
    request: pytest.FixtureRequest, redis_server: RedisServer, node: Node
) -> AsyncIterator[Under]:
    publisher = make(request.param, redis_server.port, node.port)
    yield publisher
    await publisher.close()


async def history(client: redis.Redis, channel: str) -> list[tuple[str, str, str]]:
    """(id, event, data) of every entry of the channel's stream."""
    entries = cast(list[tuple[str, dict[str, str]]], await client.xrange(f"sse:history:{channel}"))
    return [(i, fields["e"], fields["d"]) for i, fields in entries]


async def closing(client: redis.Redis, channel: str) -> list[str]:
    """The ids of the entries of the channel's stream that close it."""
    entries = cast(list[tuple[str, dict[str, str]]], await client.xrange(f"sse:history:{channel}"))
    return [i for i, fields in entries if fields.get("c") == "1"]


async def test_publish_serialises_str_bytes_and_json_once(
    under: Under, client: redis.Redis
) -> None:
    ids = [
        await under.call("publish", "kinds", "plain text"),
        await under.call("publish", "kinds", "héllo".encode(), "raw"),
        await under.call("publish", "kinds", {"n": [1, 2], "ok": True}, "json"),
        await under.call("publish", "kinds", 42),
    ]
    assert await history(client, "kinds") == [
        (ids[0], "", "plain text"),
        (ids[1], "raw", "héllo"),
        (ids[2], "json", '{"n":[1,2],"ok":true}'),
        (ids[3], "", "42"),
    ]


async def test_bad_input_is_refused_before_anything_is_sent(
    under: Under, client: redis.Redis
) -> None:
    for args in (("bad channel", "x"), ("c", b"\xff\xfe"), ("c", object()), ("c", "x", "a\nb")):
        with pytest.raises(ValueError):
            await under.call("publish", *args)
    with pytest.raises(ValueError, match="idempotency key"):
        await under.call("publish", "c", "x", idempotency_key="has space")
    with pytest.raises(ValueError):
        await under.call("publish_many", [("c", "ok"), ("bad channel", "x")])
    assert await client.exists("sse:history:c") == 0


async def test_publish_many_keeps_order_and_returns_the_ids(
    under: Under, client: redis.Redis
) -> None:
    items = [("m1", f"n{n}", "tick") if n % 2 else ("m2", {"n": n}) for n in range(200)]
    ids = await under.call("publish_many", items)
    assert len(ids) == 200 and len(set(ids)) == 200
    seqs = [int(i.split("-")[1]) for i in ids]
    assert seqs == sorted(seqs), "published in order"
    one, two = await history(client, "m1"), await history(client, "m2")
    assert [entry[0] for entry in one] == ids[1::2]
    assert [entry[0] for entry in two] == ids[0::2]
    assert [entry[2] for entry in one] == [f"n{n}" for n in range(1, 200, 2)]
    assert await under.call("publish_many", []) == []


async def test_a_batch_past_a_requests_bounds_is_published_whole_and_in_order(
    under: Under, client: redis.Redis
) -> None:
    # 1,500 messages (a node takes arrays of at most 1,000), and 80 of 16 KB (past its
    # 1 MiB body limit): an HTTP publisher sends several requests, one after the other.
    many = [(f"many{n % 3}", f"n{n}") for n in range(1500)]  # (histories keep 1,000)
    ids = await under.call("publish_many", many)
    for channel in range(3):
        assert [entry[0] for entry in await history(client, f"many{channel}")] == ids[channel::3]
    large = [("large", f"{n}:" + "x" * 16_000) for n in range(80)]
    ids = await under.call("publish_many", large)
    assert [entry[0] for entry in await history(client, "large")] == ids
    assert [e[2].partition(":")[0] for e in await history(client, "large")] == [
        str(n) for n in range(80)
    ]


async def test_stream_publishes_every_chunk_in_order_then_done(
    under: Under, client: redis.Redis
) -> None:
    words = [f"w{n} " for n in range(300)]
    ids = await under.call("stream", "answer", iter(words))
    entries = await history(client, "answer")
    assert [entry[0] for entry in entries] == ids
    assert [entry[1:] for entry in entries] == [
        *[("token", word) for word in words],
        ("done", '{"chunks":300}'),
    ]


async def test_stream_ends_with_error_when_its_source_raises(
    under: Under, client: redis.Redis
) -> None:
    def model() -> Iterator[str]:
        yield "Hello"
        yield " wor"
        raise RuntimeError("the model went away\nwith a second line")

    with pytest.raises(RuntimeError, match="the model went away"):
        await under.call("stream", "broken", model(), event="delta", done_event="end")
    assert [entry[1:] for entry in await history(client, "broken")] == [
        ("delta", "Hello"),
        ("delta", " wor"),
        ("error", "RuntimeError: the model went away"),
    ]
    with pytest.raises(ChannelClosed):  # the error ends the answer: it closes the channel
        await under.call("publish", "broken", "late")


async def test_a_coalesced_stream_merges_its_chunks_and_ends_after_them(
    under: Under, client: redis.Redis
) -> None:
    under.publisher.clock = lambda: 0.0  # time stands still: the window never passes
    words = [f"wörd{n} " for n in range(300)]  # 7, 8 or 9 bytes: 2590 in all
    ids = await under.call("stream", "merged", iter(words), coalesce=0.05, coalesce_bytes=256)
    entries = await history(client, "merged")
    assert [entry[0] for entry in entries] == ids
    said = [data for _, event, data in entries if event == "token"]
    assert "".join(said).encode() == "".join(words).encode()
    # Each event is as full as the bound allows: over 247 bytes, but the last.
    assert all(247 < len(data.encode()) <= 256 for data in said[:-1]) and len(said) == 11
    assert entries[-1][1:] == ("done", '{"chunks":300,"events":11}')

    def model() -> Iterator[Any]:
        yield {"step": 1}
        yield "Hel"
        raise RuntimeError("the model went away")

    with pytest.raises(RuntimeError):
        await under.call("stream", "half", model(), coalesce=0.05)
    assert [entry[1:] for entry in await history(client, "half")] == [
        ("token", '[{"step":1},"Hel"]'),
        ("error", "RuntimeError: the model went away"),
    ]


async def test_async_publishers_stream_async_iterables(
    redis_server: RedisServer, node: Node, client: redis.Redis
) -> None:
    async def model() -> AsyncIterator[str]:
        for n in range(50):
            await asyncio.sleep(0)
            yield f"t{n}"

    for kind in ("redis", "http"):
        under = make(kind, redis_server.port, node.port)
        try:
            await under.call("stream", f"async-{kind}", model())
        finally:
            await under.close()
        entries = await history(client, f"async-{kind}")
        assert [e[2] for e in entries] == [*(f"t{n}" for n in range(50)), '{"chunks":50}']


async def test_stream_closes_its_channel_unless_told_not_to(
    under: Under, node: Node, session: aiohttp.ClientSession, client: redis.Redis
) -> None:
    async with subscribe(session, node.url, ["answer"]) as sub:
        ids = await under.call("stream", "answer", iter(["Hel", "lo"]))
        await asyncio.wait_for(sub.ended.wait(), 10)  # the node ends it after `done`
        assert sub.events == [
            Event("Hel", "token", ids[0]),
            Event("lo", "token", ids[1]),
            Event('{"chunks":2}', "done", ids[2]),
        ]
    with pytest.raises(ChannelClosed) as refused:
        await under.call("publish", "answer", "late")
    assert str(refused.value) == CLOSED_REASON
    with pytest.raises(ChannelClosed):
        await under.call("stream", "answer", iter(["a second answer"]))
    # One that reopens it is taken (each of its events may), and closes it again.
    ids += await under.call("stream", "answer", iter(["a second answer"]), reopen=True)
    with pytest.raises(ChannelClosed):
        await under.call("publish", "answer", "late again")
    assert [entry[0] for entry in await history(client, "answer")] == ids
    assert await closing(client, "answer") == [ids[2], ids[-1]]  # each `done`
    # Left open, the channel takes more, and its subscribers' streams go on.
    async with subscribe(session, node.url, ["chat"]) as sub:
        ids = await under.call("stream", "chat", iter(["Hi"]), close=False)
        ids.append(await under.call("publish", "chat", "more"))
        assert [event.id for event in await sub.wait_for(3)] == ids
        assert not sub.ended.is_set()


async def test_publish_closes_a_channel_and_reopens_it(under: Under, client: redis.Redis) -> None:
    bye = await under.call("publish", "c", "bye", "done", close=True)
    with pytest.raises(ChannelClosed) as refused:
        await under.call("publish", "c", "late")
    assert str(refused.value) == CLOSED_REASON
    with pytest.raises(ChannelClosed):
        await under.call("publish_many", [("c", "late, in a batch")])
    again = await under.call("publish", "c", "again", reopen=True)
    after = await under.call("publish", "c", "and open")
    assert await history(client, "c") == [
        (bye, "done", "bye"),
        (again, "", "again"),
        (after, "", "and open"),
    ]
    assert await closing(client, "c") == [bye]


async def test_a_repeated_idempotency_key_publishes_once(under: Under, client: redis.Redis) -> None:
    first = await under.call("publish", "once", "a", idempotency_key="order-17:paid")
    again = await under.call("publish", "once", "a (retried)", idempotency_key="order-17:paid")
    other = await under.call("publish", "twice", "b", idempotency_key="order-17:paid")
    assert again == first and other != first, "per channel"
    assert await history(client, "once") == [(first, "", "a")]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_retry_after_a_lost_reply_never_duplicates(
    kind: str, redis_server: RedisServer, node: Node, client: redis.Redis
) -> None:
    # The server publishes, then the reply is lost: the publisher must retry, and the
    # retry must not publish again.
    through_redis = "redis" in kind
    target, trigger = (redis_server.port, b"FCALL") if through_redis else (node.port, b"POST")
    async with ReplyDroppingProxy(target, trigger) as proxy:
        ports = (proxy.port, node.port) if through_redis else (redis_server.port, proxy.port)
        under = make(kind, *ports)
        try:
            # Its last message closes the channel: the retry gets the ids, not a refusal.
            batch = [("lost", "one"), Publication.of("lost", "two", close=True)]
            ids = await under.call("publish_many", batch)
        finally:
            await under.close()
    assert proxy.dropped == 1, "a reply was lost on the way"
    assert await history(client, "lost") == [(ids[0], "", "one"), (ids[1], "", "two")]
    assert await closing(client, "lost") == [ids[1]]


async def test_refusals_are_not_retried(node: Node) -> None:
    for publisher in (HttpPublisher(node.url, "wrong"), SyncHttpPublisher(node.url, "wrong")):
        under = Under(publisher)
        with pytest.raises(PublishError) as refused:
            await under.call("publish", "c", "x")
        assert (refused.value.status, refused.value.reason) == (
            401,
            "missing or wrong bearer token",
        )
        await under.close()
