"""The simulated LLM answer: `thinking`, one `token` event per word, then `done`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import orjson

from ..message import Message

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
