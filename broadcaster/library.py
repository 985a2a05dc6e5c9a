"""The Redis Function library behind durable publish (`FCALL sse_publish`)."""

from __future__ import annotations

from importlib import resources

import redis.asyncio as redis
from redis.exceptions import ResponseError

_SOURCE = resources.files(__package__).joinpath("redis_library.lua").read_text("utf-8")


def render(prefix: str, maxlen: int, ttl: int) -> str:
    """The library's code for a channel prefix and retention (the prefix is pre-validated)."""
    return (
        _SOURCE.replace("{{prefix}}", prefix)
        .replace("{{maxlen}}", str(int(maxlen)))
        .replace("{{ttl}}", str(int(ttl)))
    )


async def load(client: redis.Redis, prefix: str, maxlen: int, ttl: int, *, replace: bool) -> None:
    """Load the library; without `replace`, keep a version that is already there."""
    try:
        await client.function_load(render(prefix, maxlen, ttl), replace=replace)
    except ResponseError as exc:
        if replace or "already exists" not in str(exc):
            raise
