"""The simulated LLM answer: `thinking`, `token` events (the words that come within
`COALESCE` seconds of each other merged into one), then `done`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from broadcaster.client import Publisher

COALESCE = 0.05  # seconds: at most ~20 token events a second, however fast the words come

_ANSWER = (
    "Here is a streamed answer to “{prompt}”. The words you see arrived as server-sent "
    "events (those of each 50 ms as one), published once and fanned out by every node. "
    "If the node serving "
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
    """Publish `thinking`, then the words as `token` events (`stream`, coalesced), then
    `done`."""
    await publisher.publish(channel, {"prompt": prompt}, "thinking")
    words = _words(prompt, delay)
    # (The page's channel carries every answer of its conversation: it stays open.)
    await publisher.stream(
        channel, words, event="token", done_event="done", coalesce=COALESCE, close=False
    )


async def _words(prompt: str, delay: float) -> AsyncIterator[str]:
    """The simulated model: one word every `delay` seconds."""
    for word in tokens(simulated_answer(prompt)):
        await asyncio.sleep(delay)
        yield word
