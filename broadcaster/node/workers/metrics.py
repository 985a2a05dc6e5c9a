"""One scrape for all workers: whichever worker answers `/metrics` gathers every worker's.

A scrape of the shared port lands on one worker, chosen by the kernel. So each worker also
serves its own metrics on a private Unix socket, and `/metrics` reads its siblings' there
and merges them into one exposition, each series labelled with its `worker`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from broadcaster.core.metrics import Metrics
from broadcaster.node.workers.slot import WorkerSlot

READ_TIMEOUT = 2.0


class WorkerMetrics:
    """Serves this worker's metrics on its socket; `exposition` is every worker's."""

    def __init__(self, local: Metrics, slot: WorkerSlot) -> None:
        self._local = local
        self._slot = slot
        self._runner: web.AppRunner | None = None
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    async def start(self) -> None:
        """Serve this worker's own metrics on its socket."""
        app = web.Application()
        app.router.add_get("/metrics", self._own)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, self._slot.sockets[self._slot.index]).start()
        timeout = aiohttp.ClientTimeout(total=READ_TIMEOUT)
        self._sessions = {
            index: aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=path), timeout=timeout
            )
            for index, path in enumerate(self._slot.sockets)
            if index != self._slot.index
        }

    async def close(self) -> None:
        """Stop serving and reading."""
        for session in self._sessions.values():
            await session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def exposition(self) -> bytes:
        """Every worker's series, labelled `worker`; one being restarted is left out."""
        texts = await asyncio.gather(*(self._read(i) for i in range(len(self._slot.sockets))))
        return merged(texts)

    async def _own(self, request: web.Request) -> web.Response:
        return web.Response(body=self._local.exposition())

    async def _read(self, index: int) -> str | None:
        if index == self._slot.index:
            return self._local.exposition().decode()
        try:
            async with self._sessions[index].get("http://worker/metrics") as response:
                return await response.text()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None


def merged(texts: Sequence[str | None]) -> bytes:
    """One exposition of each worker's (by index), every sample labelled `worker`."""
    # By name and type: a counter `x` (exposed as `x_total`) and a gauge `x` can both exist.
    families: dict[tuple[str, str], Metric] = {}
    for worker, text in enumerate(texts):
        if text is None:
            continue
        for family in text_string_to_metric_families(text):
            key = (family.name, family.type)
            into = families.get(key)
            if into is None:
                into = families[key] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            into.samples += [
                sample._replace(labels={**sample.labels, "worker": str(worker)})
                for sample in family.samples
            ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families.values()))
    return generate_latest(registry)


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
