"""Publishing as the tests do: over HTTP through a node (POST /publish), or straight to
Redis (FCALL sse_publish, the function every Redis publisher calls)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
import redis.asyncio as redis

TOKEN = "t"  # the publish token the tests start their nodes with


def bearer(token: str = TOKEN) -> dict[str, str]:
    """The Authorization header of a publisher (or subscriber) holding `token`."""
    return {"Authorization": f"Bearer {token}"}


async def post(
    session: aiohttp.ClientSession,
    base: str,
    body: Any,
    *,
    token: str = TOKEN,
    key: str | None = None,
) -> tuple[int, Any]:
    """POST `body` (one message or a batch) to /publish of the node at `base`, with `key`
    as its Idempotency-Key: the status and, on 200, the JSON answer, otherwise the text.
    It asserts nothing: for a test that checks refusals, or retries."""
    headers = {**bearer(token), **({"Idempotency-Key": key} if key else {})}
    async with session.post(f"{base}/publish", json=body, headers=headers) as answer:
        if answer.status == 200:
            return answer.status, await answer.json()
        return answer.status, await answer.text()


async def publish(
    session: aiohttp.ClientSession,
    base: str,
    channel: str,
    data: Any,
    *,
    token: str = TOKEN,
    **fields: Any,
) -> str:
    """Publish `data` on `channel` (with `fields`: event=...) through the node at `base`;
    it must be accepted (200). Its id."""
    status, answer = await post(
        session, base, {"channel": channel, "data": data, **fields}, token=token
    )
    assert status == 200, answer
    return str(answer["id"])


async def fcall(client: redis.Redis, channel: str, data: str, event: str | None = None) -> str:
    """Publish straight to Redis, as the Redis publishers do (FCALL sse_publish); the id."""
    args = [data] + ([event] if event else [])
    return (await client.fcall("sse_publish", 1, channel, *args)).decode()  # type: ignore[no-any-return]


async def acknowledged(
    session: aiohttp.ClientSession, bases: list[str], body: Any, key: str, first: int = 0
) -> Any:
    """POST `body` under the idempotency key `key`, through the nodes at `bases` in turn
    (from `first`), until one acknowledges it (a producer's retries across a failover);
    the JSON answer. Fails after 90 seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    for attempt in itertools.count():
        assert loop.time() < deadline, f"{body} never acknowledged"
        base = bases[(first + attempt) % len(bases)]
        try:
            status, answer = await post(session, base, body, key=key)
            if status == 200:
                return answer
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)  # a producer's backoff, not a wait for a condition
    raise AssertionError("unreachable")
