"""The cases that publish as fast as they can: the `XADD` yardstick, raw `FCALL
sse_publish` pipelines, the Python publishers, and `POST /publish` through one node.

Messages go round the bench's channels in turn (one shared counter per case), so how many
each channel's history holds is known (see `kept`)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import uvloop

from broadcaster import HttpPublisher, Publisher, RedisPublisher, SyncRedisPublisher
from broadcaster.brokers.config import DEFAULT_CONFIG
from broadcaster.brokers.redis.library import FUNCTION

from .drive import Tally, drive_async, drive_sync, drive_threads
from .meter import KEYS, Meter

PIPELINE = 100  # XADDs or FCALLs per round trip in the raw cases unless named otherwise
HTTP_SENDERS = 16  # concurrent single POSTs
HTTP_ARRAY_SENDERS = 4  # concurrent POSTs of an array
PREV = "1700000000000-1000000"  # an id as long as the function's `p` field holds


@dataclass
class Bench:
    """What every case runs against."""

    redis_url: str
    redis_pid: int
    control: redis.Redis  # a client of our own for RESETSTAT, INFO, FLUSHALL, XLEN
    channels: list[str]
    payload: str
    warmup: float
    seconds: float
    stream_seconds: float
    answers: int
    node_url: str | None = None
    node_pid: int | None = None
    token: str = "tok"

    def meter(self) -> Meter:
        return Meter(self.control, self.redis_pid, self.node_pid)


@dataclass
class Case:
    name: str
    what: str
    run: Callable[[Bench], dict[str, Any]]
    node: bool = False  # needs a node (HTTP)


class Round:
    """The bench's channels in turn (callers in several threads take turns)."""

    def __init__(self, channels: Sequence[str]) -> None:
        self.channels, self.n = channels, 0
        self._lock = threading.Lock()

    def take(self, count: int) -> list[str]:
        with self._lock:
            first, self.n = self.n, self.n + count
        size = len(self.channels)
        return [self.channels[(first + i) % size] for i in range(count)]


def kept(total: int, channels: int, maxlen: int = DEFAULT_CONFIG.history_maxlen) -> int:
    """What the histories hold after `total` messages round `channels` channels."""
    each, extra = divmod(total, channels)
    return extra * min(each + 1, maxlen) + (channels - extra) * min(each, maxlen)


def result(meter: Meter, tally: Tally, command: str = "fcall") -> dict[str, Any]:
    return {**meter.figures(tally.measured, command), "published": tally.total}


def xadd(bench: Bench) -> dict[str, Any]:
    """The yardstick: pipelined XADDs of the entry `sse_publish` appends, same MAXLEN."""
    client = redis.Redis.from_url(bench.redis_url)
    fields: dict[Any, Any] = {"d": bench.payload, "e": "", "p": PREV}
    turn = Round([KEYS.history(channel) for channel in bench.channels])

    def step() -> int:
        with client.pipeline(transaction=False) as pipe:
            for key in turn.take(PIPELINE):
                pipe.xadd(key, fields, maxlen=DEFAULT_CONFIG.history_maxlen, approximate=False)
            pipe.execute()
        return PIPELINE

    meter = bench.meter()
    with client:
        return result(meter, drive_sync(step, meter, bench.warmup, bench.seconds), "xadd")


def raw_fcall(depth: int, keyed: bool) -> Callable[[Bench], dict[str, Any]]:
    """Single `FCALL sse_publish 1 <channel> <data> ["" <key>]` calls, `depth` to a
    pipeline (redis-py), one pipeline at a time."""

    def run(bench: Bench) -> dict[str, Any]:
        client = redis.Redis.from_url(bench.redis_url)
        turn = Round(bench.channels)
        prefix = f"raw-{secrets.token_hex(4)}-"

        def step() -> int:
            first = turn.n
            with client.pipeline(transaction=False) as pipe:
                for n, channel in enumerate(turn.take(depth), first):
                    if keyed:
                        pipe.fcall(FUNCTION, 1, channel, bench.payload, "", f"{prefix}{n:x}")
                    else:
                        pipe.fcall(FUNCTION, 1, channel, bench.payload)
                pipe.execute()
            return depth

        meter = bench.meter()
        with client:
            return result(meter, drive_sync(step, meter, bench.warmup, bench.seconds))

    return run


def sync_publisher(
    batch: int, retries: int = 3, callers: int = 1
) -> Callable[[Bench], dict[str, Any]]:
    """`SyncRedisPublisher.publish_many` of `batch` messages (`publish` for 1), one call
    at a time from each of `callers` threads sharing the publisher; with `retries` (the
    default 3), each message gets an idempotency key."""

    def run(bench: Bench) -> dict[str, Any]:
        turn = Round(bench.channels)
        meter = bench.meter()
        with SyncRedisPublisher.from_url(bench.redis_url, retries=retries) as publisher:
            if batch == 1:

                def step() -> int:
                    publisher.publish(turn.take(1)[0], bench.payload)
                    return 1
            else:

                def step() -> int:
                    items = [(channel, bench.payload) for channel in turn.take(batch)]
                    return len(publisher.publish_many(items))

            if callers == 1:
                tally = drive_sync(step, meter, bench.warmup, bench.seconds)
            else:
                tally = drive_threads(step, callers, meter, bench.warmup, bench.seconds)
            return {**result(meter, tally), "callers": callers}

    return run


def async_publisher(
    batch: int, callers: int = 1, *, http: bool = False
) -> Callable[[Bench], dict[str, Any]]:
    """`RedisPublisher.publish_many` of `batch` messages (`publish` for 1), one call at a
    time from each of `callers` tasks sharing the publisher (uvloop), each message with an
    idempotency key (the default). With `http`, `HttpPublisher` (aiohttp, one session) to
    the node's `POST /publish`: a single message, or an array."""

    async def main(bench: Bench) -> dict[str, Any]:
        assert bench.node_url is not None or not http
        publisher: Publisher = (
            HttpPublisher(bench.node_url or "", bench.token)
            if http
            else RedisPublisher.from_url(bench.redis_url)
        )
        turn = Round(bench.channels)
        meter = bench.meter()
        async with publisher:

            async def step() -> int:
                if batch == 1:
                    await publisher.publish(turn.take(1)[0], bench.payload)
                    return 1
                items = [(channel, bench.payload) for channel in turn.take(batch)]
                return len(await publisher.publish_many(items))

            tally = await drive_async(step, callers, meter, bench.warmup, bench.seconds)
        return {**result(meter, tally), "callers": callers}

    return lambda bench: uvloop.run(main(bench))


CASES = [
    Case("xadd", f"yardstick: pipelined XADDs ({PIPELINE} a round trip)", xadd),
    Case("fcall-10", "raw FCALL sse_publish, pipelines of 10", raw_fcall(10, keyed=False)),
    Case(
        "fcall-100", f"raw FCALL sse_publish, pipelines of {PIPELINE}", raw_fcall(PIPELINE, False)
    ),
    Case(
        "fcall-key-100",
        f"raw FCALL sse_publish with an idempotency key, pipelines of {PIPELINE}",
        raw_fcall(PIPELINE, keyed=True),
    ),
    Case("async-many-10", "RedisPublisher.publish_many, 10 a call", async_publisher(10)),
    Case("async-many-100", "RedisPublisher.publish_many, 100 a call", async_publisher(100)),
    Case("sync-many-10", "SyncRedisPublisher.publish_many, 10 a call", sync_publisher(10)),
    Case("sync-many-100", "SyncRedisPublisher.publish_many, 100 a call", sync_publisher(100)),
    Case(
        "sync-many-100-nokeys",
        "SyncRedisPublisher(retries=0).publish_many, 100 a call: no idempotency keys",
        sync_publisher(100, retries=0),
    ),
    Case(
        "async-many-100-x2",
        "RedisPublisher.publish_many, 100 a call, two tasks at once",
        async_publisher(100, callers=2),
    ),
    Case(
        "sync-many-100-x2",
        "SyncRedisPublisher.publish_many, 100 a call, two threads at once",
        sync_publisher(100, callers=2),
    ),
    Case("async-one", "RedisPublisher.publish, one at a time", async_publisher(1)),
    Case("sync-one", "SyncRedisPublisher.publish, one at a time", sync_publisher(1)),
    Case(
        "http-one",
        f"POST /publish, one message, {HTTP_SENDERS} concurrent senders (HttpPublisher)",
        async_publisher(1, HTTP_SENDERS, http=True),
        node=True,
    ),
    Case(
        "http-many-100",
        f"POST /publish, arrays of 100, {HTTP_ARRAY_SENDERS} concurrent senders (HttpPublisher)",
        async_publisher(100, HTTP_ARRAY_SENDERS, http=True),
        node=True,
    ),
]
