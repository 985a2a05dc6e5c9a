"""Run one node: serve until SIGTERM or SIGINT, then drain within the shutdown bound."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from .app import create_app
from .header_timeout import HeaderTimeout
from .logs import access_log_options
from .redis.client import redacted
from .settings import Settings
from .state import HUB, STATE

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    """Serve a node until a stop signal; open streams end cleanly before exit."""
    app = create_app(settings)
    header_timeout = HeaderTimeout(settings.header_timeout)
    app.middlewares.append(header_timeout.middleware)
    # handler_cancellation: a client that goes away cancels its stream handler at once.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        keepalive_timeout=75,
        shutdown_timeout=settings.shutdown_timeout / 2,
        **access_log_options(settings),  # type: ignore[arg-type]
    )
    await runner.setup()
    assert runner.server is not None
    sweeper = asyncio.create_task(header_timeout.sweep_forever())
    site = header_timeout.site(runner, settings.host, settings.port, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await site.start()
        log.info(
            "node %s listening on http://%s:%d with %s",
            settings.node_id,
            settings.host,
            settings.port,
            f"redis at {redacted(settings.redis_url)}"
            if settings.redis_url
            else "the embedded broker",
        )
        await stop.wait()
        await _drain(app, settings.shutdown_timeout / 2)
    finally:
        sweeper.cancel()
        await runner.cleanup()
    log.info("stopped")


async def _drain(app: web.Application, bound: float) -> None:
    # While the listener still answers, /readyz and new subscribers get 503 (load
    # balancers move on) and every open stream ends with a proper end of body.
    app[STATE].draining = True
    hub = app[HUB]
    log.info("draining: ending %d open streams", hub.stream_count)
    hub.close_all("shutdown")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(hub.emptied(), bound)
