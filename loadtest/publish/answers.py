"""`RedisPublisher.stream` on a simulated LLM answer: 500 short tokens a second, with and
without coalescing. A subscriber on Redis pub/sub (the durable channel every node
follows) reads every event back, and the text it got is held against the source's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
import uvloop

from broadcaster import RedisPublisher
from broadcaster.core.message import unpack

from .cases import Bench, Case, kept
from .meter import KEYS

RATE = 500.0  # tokens a second
# Short tokens, some of them not ASCII, one a line break: the text must come back whole.
TOKENS = ["The", " answer", ",", " in", " short", ":", " ça", " marche", " —", " ✓", " 🙂", "\n"]


def text_of(count: int) -> str:
    """The text of a source of `count` tokens."""
    return "".join(TOKENS[n % len(TOKENS)] for n in range(count))


async def source(count: int, rate: float = RATE) -> AsyncIterator[str]:
    """`count` tokens, `rate` a second on average (each waits for its time: a token that
    comes late does not push the next ones back)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(count):
        delay = started + n / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield TOKENS[n % len(TOKENS)]


async def listen(
    client: aioredis.Redis, channels: list[str], ready: asyncio.Event
) -> dict[str, list[tuple[str, str]]]:
    """Every (event, data) that reaches the channels' durable pub/sub channels, in order,
    until each has had its `done` event."""
    got: dict[str, list[tuple[str, str]]] = {channel: [] for channel in channels}
    names = {KEYS.pubsub(channel)[1]: channel for channel in channels}
    open_ = set(channels)
    async with client.pubsub() as pubsub:
        await pubsub.subscribe(*names)
        ready.set()
        while open_:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                continue
            channel = names[message["channel"].decode()]
            event = unpack(message["data"])
            got[channel].append((event.event or "", event.data))
            if event.event == "done":
                open_.discard(channel)
    return got


def stream(coalesce: float) -> Callable[[Bench], dict[str, Any]]:
    """`--answers` answers at once, each `stream_seconds` of 500 tokens a second through
    `RedisPublisher.stream(..., coalesce=coalesce)`, on channels of their own."""

    async def main(bench: Bench) -> dict[str, Any]:
        count = round(bench.stream_seconds * RATE)
        channels = [f"answer.{n}" for n in range(bench.answers)]
        meter = bench.meter()
        reader = aioredis.Redis.from_url(bench.redis_url)
        ready = asyncio.Event()
        listening = asyncio.create_task(listen(reader, channels, ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            async with RedisPublisher.from_url(bench.redis_url) as publisher:
                await publisher.publish("answer.warm", "warm")  # connected, library loaded

                async def answer(channel: str) -> tuple[int, float]:
                    started = time.monotonic()
                    ids = await publisher.stream(channel, source(count), coalesce=coalesce)
                    return len(ids), time.monotonic() - started

                meter.start()
                answered = await asyncio.gather(*(answer(channel) for channel in channels))
                meter.stop()
            got = await asyncio.wait_for(listening, 30)
        finally:
            listening.cancel()
            await reader.aclose()
        published = sum(ids for ids, _ in answered)
        events = [sum(1 for event, _ in got[channel] if event == "token") for channel in channels]
        text = text_of(count)
        return {
            **meter.figures(published),
            "published": published + 1,  # and the warm-up
            "expected_in_history": sum(kept(ids, 1) for ids, _ in answered) + 1,
            "tokens_per_answer": count,
            "redis_usec_per_token": round(
                meter.stats.get("fcall", {}).get("usec", 0) / (count * len(channels)), 2
            ),
            "source_tokens_per_second": round(count / max(s for _, s in answered), 1),
            "answers": len(channels),
            "events_per_answer": events,
            "events_per_second_per_answer": [
                round(n / seconds, 1) for n, (_, seconds) in zip(events, answered, strict=True)
            ],
            "done": [orjson.loads(got[c][-1][1]) if got[c] else None for c in channels],
            "same_text": all(
                "".join(data for event, data in got[channel] if event == "token") == text
                for channel in channels
            ),
        }

    return lambda bench: uvloop.run(main(bench))


STREAMS = [
    Case("stream", "RedisPublisher.stream, 500 tokens/s, coalesce=0", stream(0)),
    Case("stream-coalesce", "RedisPublisher.stream, 500 tokens/s, coalesce=0.05", stream(0.05)),
]
