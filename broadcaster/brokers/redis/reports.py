"""Telling Redis the newest id a node delivered (`FCALL sse_seen`), on every reconnect.

A resume from before a failover gap learns from these reports that a lost message
reached clients (see the function library). A primary that refuses writes for want of
replicas (`min-replicas-to-write`: right after a failover, or cut off) refuses the
report too: it is made again in the background until it is taken, or the next
session reports anew.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import ResponseError

from broadcaster.brokers.redis.client import LINK_ERRORS
from broadcaster.brokers.redis.library import AsyncClient, Library, too_few_replicas

log = logging.getLogger(__name__)


class SeenReports:
    """Reports through `client`; at most one report waits for a primary at a time. On a
    Redis Cluster, each group has its own, named by one of its channels."""

    def __init__(
        self, library: Library, client: AsyncClient, *, max_backoff: float, channel: str = ""
    ) -> None:
        self._library = library
        self._client = client
        self._channel = channel
        self._max_backoff = max_backoff
        self._later: asyncio.Task[None] | None = None

    async def report(self, seen: str) -> None:
        """Report `seen` now; if the primary refuses it for want of replicas, keep trying
        in the background (a later report replaces it)."""
        self.cancel()
        if not await self._try(seen):
            self._later = asyncio.create_task(self._retry(seen), name="report-seen")

    def cancel(self) -> None:
        """Stop a report still waiting for the primary."""
        if self._later is not None:
            self._later.cancel()
            self._later = None

    async def close(self) -> None:
        """Stop, and wait until it has."""
        later, self._later = self._later, None
        if later is not None:
            later.cancel()
            await asyncio.gather(later, return_exceptions=True)

    async def _try(self, seen: str) -> bool:
        """Whether the report is done (taken, or refused for good: logged)."""
        try:
            await self._library.report_seen(self._client, seen, self._channel)
        except ResponseError as exc:
            if too_few_replicas(exc):
                return False
            log.warning("cannot report the newest id delivered: %s", exc)
        return True

    async def _retry(self, seen: str) -> None:
        delay = 0.1
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)
            try:
                if await self._try(seen):
                    return
            except LINK_ERRORS:
                return  # the next session reports again
