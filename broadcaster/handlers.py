"""HTTP endpoints: subscribe, metrics, health."""

from __future__ import annotations

from collections import Counter

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .auth import AuthError, require
from .channels import check_channel
from .limits import client_ip
from .metrics import RejectReason
from .replies import error
from .state import (
    AUTH,
    BROKER,
    LIMITER,
    METRICS,
    SETTINGS,
    STATE,
    TRUSTED_PROXIES,
)
from .streaming import overloaded, requested_start, serve_stream

routes = web.RouteTableDef()


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Stream the events of every `channel` in the query string, or say why not."""
    settings = request.app[SETTINGS]
    rejected = request.app[METRICS].counts.rejected
    channels = list(dict.fromkeys(request.query.getall("channel", [])))
    if not channels:
        return refuse(rejected, "bad_request", 400, "missing channel: use /events?channel=<name>")
    limit = settings.max_channels_per_connection
    if len(channels) > limit:
        return refuse(
            rejected, "bad_request", 400, f"too many channels: at most {limit} per connection"
        )
    try:
        for channel in channels:
            check_channel(channel)
        start = requested_start(request)
    except ValueError as exc:
        return refuse(rejected, "bad_request", 400, str(exc))
    if request.app[STATE].draining:
        return refuse(rejected, "draining", 503, "node is shutting down", **{"Retry-After": "1"})
    auth = request.app[AUTH]
    if auth.enabled:
        try:
            require(auth.grant(request).subscribe, channels, "subscribe")
        except AuthError as exc:
            reason: RejectReason = "unauthorized" if exc.status == 401 else "forbidden"
            return refuse(rejected, reason, exc.status, exc.reason)
    ip = client_ip(request, request.app[TRUSTED_PROXIES])
    limiter = request.app[LIMITER]
    refused = limiter.acquire(ip)
    if refused is not None:
        rejected[refused] += 1
        return await overloaded(request, refused)
    request.app[METRICS].counts.connections_opened += 1
    try:
        return await serve_stream(request, channels, start)
    finally:
        limiter.release(ip)


def refuse(
    rejected: Counter[RejectReason], reason: RejectReason, status: int, text: str, **headers: str
) -> web.Response:
    """Count a refused subscription by reason, and answer it."""
    rejected[reason] += 1
    return error(status, text, **headers)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    body = request.app[METRICS].exposition()
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
