"""The demo producer: a simulated LLM answer streamed token by token, durably published."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

import orjson
import redis.asyncio as redis

from .channels import check_channel
from .message import Message
from .publisher import RedisPublisher

log = logging.getLogger(__name__)

Publish = Callable[[str, Message], Awaitable[Message]]

_ANSWER = (
    "Here is a streamed answer to “{prompt}”. Each word you see arrived as its own "
    "server-sent event, published once and fanned out by every node. If the node serving "
    "you goes away, your browser reconnects with Last-Event-ID and the answer continues "
    "exactly where it stopped: no token lost, none repeated."
)


def simulated_answer(prompt: str) -> str:
    """The full text the demo streams for `prompt` (deterministic, for tests)."""
    return _ANSWER.format(prompt=" ".join(prompt.split())[:200])


def tokens(text: str) -> list[str]:
    """Split `text` into word tokens that keep their leading space."""
    return re.findall(r"\s*\S+", text)


async def stream_answer(publish: Publish, channel: str, prompt: str, delay: float) -> None:
    """Publish `thinking`, then one `token` event per word, then `done`."""
    await publish(channel, Message(orjson.dumps({"prompt": prompt}).decode(), "thinking"))
    words = tokens(simulated_answer(prompt))
    for word in words:
        await asyncio.sleep(delay)
        await publish(channel, Message(word, "token"))
    await publish(channel, Message(orjson.dumps({"tokens": len(words)}).decode(), "done"))


def job_queue(prefix: str) -> str:
    """The Redis list of questions waiting for a demo producer."""
    return f"{prefix}demo:jobs"


def job(channel: str, prompt: str) -> bytes:
    """A queued question."""
    return orjson.dumps({"channel": check_channel(channel), "prompt": prompt})


async def run_worker(redis_url: str, prefix: str, delay: float) -> None:
    """Answer queued questions forever (the producer of a cluster, outside the nodes)."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, protocol=2)
    publisher = RedisPublisher(client, prefix=prefix)
    running: set[asyncio.Task[None]] = set()
    log.info("demo producer waiting for questions on %s", job_queue(prefix))
    try:
        while True:
            popped = await client.blpop([job_queue(prefix)], timeout=5)
            if popped is None:
                continue
            question = orjson.loads(popped[1])
            task = asyncio.create_task(
                stream_answer(publisher.send, question["channel"], question["prompt"], delay)
            )
            running.add(task)
            task.add_done_callback(running.discard)
    finally:
        await client.aclose()
