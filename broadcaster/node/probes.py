"""Operational endpoints: metrics, liveness and readiness."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from broadcaster.node.replies import error
from broadcaster.node.state import BROKER, EXPOSITION, STATE

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    body = await request.app[EXPOSITION]()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Alive while the process runs."""
    return web.Response(text="ok\n")


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when the broker is reachable and the node is not draining."""
    if request.app[STATE].draining:
        return error(503, "draining")
    if not request.app[BROKER].connected:
        return error(503, "broker unavailable")
    return web.Response(text="ready\n")
