"""The simulated LLM answer: `thinking`, one `token` event per word, then `done`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from broadcaster.client import Publisher

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


async def stream_answer(publisher: Publisher, channel: str, prompt: str, delay: float) -> None:
    """Publish `thinking`, then one `token` event per word (`stream`), then `done`."""
    await publisher.publish(channel, {"prompt": prompt}, "thinking")
    await publisher.stream(channel, _words(prompt, delay), event="token", done_event="done")


async def _words(prompt: str, delay: float) -> AsyncIterator[str]:
    """The simulated model: one word every `delay` seconds."""
    for word in tokens(simulated_answer(prompt)):
        await asyncio.sleep(delay)
        yield word
