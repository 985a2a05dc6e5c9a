"""Run one node: serve until SIGTERM or SIGINT, then drain within the shutdown bound."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable, Sequence

from aiohttp import web

from broadcaster.brokers.redis.client import redacted
from broadcaster.node.header_timeout import HeaderTimeout
from broadcaster.node.logs import access_log_options
from broadcaster.node.ports import cannot_listen
from broadcaster.node.process.app import Part, create_app
from broadcaster.node.settings import NodeSettings
from broadcaster.node.state import EXPOSITION, HUB, METRICS, STATE
from broadcaster.node.workers.metrics import WorkerMetrics
from broadcaster.node.workers.slot import WorkerSlot

log = logging.getLogger(__name__)

GC_YOUNG_THRESHOLD = 10_000
LINGERING_TIME = 2.0


async def serve(
    settings: NodeSettings,
    slot: WorkerSlot | None = None,
    listening: Callable[[], None] | None = None,
    parts: Sequence[Part] = (),
) -> None:
    """Serve a node until a stop signal; open streams end cleanly before exit. Raises
    `ListenError` when it cannot listen.

    As one of several workers (`slot`), it shares the port with its siblings and its
    `/metrics` shows theirs too. `listening` is called once it accepts connections.
    `parts` are the node's optional parts (see `create_app`).
    """
    app = create_app(settings, parts=parts)
    workers = None if slot is None else WorkerMetrics(app[METRICS], slot)
    if workers is not None:
        app[EXPOSITION] = workers.exposition
    header_timeout = HeaderTimeout(settings.header_timeout)
    app.middlewares.append(header_timeout.middleware)
    # handler_cancellation: a client that goes away cancels its stream handler at once.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        keepalive_timeout=75,
        # A body left unread (a refused or cut-off upload) is read and dropped for at most
        # this long before the connection closes, not aiohttp's 10 s: a trickling client
        # holds its descriptor no longer than that after its 408.
        lingering_time=LINGERING_TIME,
        # SO_KEEPALIVE probes only after the system's 2 hours; streams have heartbeats.
        # Skipping it spares a socket object and a setsockopt per connection.
        tcp_keepalive=False,
        shutdown_timeout=settings.shutdown_timeout / 2,
        **access_log_options(settings),  # type: ignore[arg-type]
    )
    await runner.setup()
    assert runner.server is not None
    sweeper = asyncio.create_task(header_timeout.sweep_forever())
    site = header_timeout.site(
        runner, settings.host, settings.port, backlog=4096, reuse_port=slot is not None
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if workers is not None:
            await workers.start()
        try:
            await site.start()
        except OSError as exc:
            raise cannot_listen(settings.host, settings.port, exc) from None
        _settle_memory()
        log.info(
            "node %s (pid %d) listening on http://%s:%d with %s",
            settings.node_id,
            os.getpid(),
            settings.host,
            settings.port,
            f"redis at {redacted(settings.redis_url)}"
            if settings.redis_url
            else "the embedded broker",
        )
        if listening is not None:
            listening()
        await stop.wait()
        await _drain(app, settings.shutdown_timeout / 2)
    finally:
        sweeper.cancel()
        await runner.cleanup()
        if workers is not None:
            await workers.close()
    log.info("stopped")


def _settle_memory() -> None:
    """Leave what startup made out of the cyclic garbage collector's work, and collect the
    young generation less often.

    Every connection makes dozens of objects; at the default threshold (700) a reconnect
    storm of 10k clients spent 12 % of the node's time in collections that found little.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD)


async def _drain(app: web.Application, bound: float) -> None:
    # While the listener still answers, /readyz and new subscribers get 503 (load
    # balancers move on) and every open stream ends with a proper end of body.
    app[STATE].draining = True
    hub = app[HUB]
    log.info("draining: ending %d open streams", hub.stream_count)
    hub.close_all("shutdown")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(hub.emptied(), bound)
