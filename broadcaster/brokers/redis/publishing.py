"""A node's durable publish: the function library's answer, or the broker error a node
turns into a status (one home for both Redis brokers)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.exceptions import ResponseError

from broadcaster.brokers.protocol import KEY_LIMIT_REASON, BrokerUnavailable, KeyLimit, NotConfirmed
from broadcaster.brokers.redis.client import LINK_ERRORS
from broadcaster.brokers.redis.library import AsyncClient, Library, NotReplicated
from broadcaster.core.publication import Publication


async def publish(
    library: Library,
    client: AsyncClient,
    in_flight: asyncio.Semaphore,
    batch: Sequence[Publication],
) -> list[str]:
    """Publish `batch` durably (one pipeline of `FCALL sse_publish`); the ids. KeyLimit
    for a channel that remembers too many idempotency keys; ChannelClosed for a publish
    to a closed channel (both from the library); BrokerUnavailable for anything else
    Redis refused or could not take (retryable), as NotConfirmed when too few replicas
    confirmed it."""
    try:
        async with in_flight:
            return await library.publish(client, batch)
    except NotReplicated as exc:
        raise NotConfirmed(str(exc)) from exc
    except ResponseError as exc:
        if KEY_LIMIT_REASON in str(exc):
            raise KeyLimit(KEY_LIMIT_REASON) from None
        raise BrokerUnavailable(f"redis refused the publish: {exc}") from exc
    except LINK_ERRORS as exc:
        raise BrokerUnavailable(f"redis unavailable: {exc}") from exc
