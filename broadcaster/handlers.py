"""HTTP endpoints: subscribe, publish, health."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .auth import AuthError, require
from .broker import BrokerUnavailable
from .channels import check_channel
from .limits import client_ip
from .message import Message
from .metrics import RejectReason
from .replies import error, invalid
from .sse import check_field
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


class PublishRequest(BaseModel):
    """The body of POST /publish."""

    model_config = ConfigDict(extra="forbid")

    channel: str
    data: Any
    event: str | None = None

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        return check_channel(value)

    @field_validator("event")
    @classmethod
    def _event(cls, value: str | None) -> str | None:
        return None if value is None else check_field("event", value)

    def message(self) -> Message:
        """The message to publish; non-string data is sent as its JSON text."""
        data = self.data if isinstance(self.data, str) else orjson.dumps(self.data).decode()
        return Message(data, self.event or None)


@routes.post("/publish")
async def publish(request: web.Request) -> web.Response:
    """Publish one message to every subscriber on every node."""
    auth = request.app[AUTH]
    if not auth.publishing_protected:
        return error(403, "HTTP publish is disabled: set BROADCASTER_PUBLISH_TOKEN to enable it")
    try:
        allowed = auth.publish_patterns(request)
    except AuthError as exc:
        return error(exc.status, exc.reason, **{"WWW-Authenticate": "Bearer"})
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return error(400, f"body is not valid JSON: {exc}")
    try:
        publication = PublishRequest.model_validate(body)
    except ValidationError as exc:
        return invalid(exc)
    try:
        require(allowed, [publication.channel], "publish")
    except AuthError as exc:
        return error(exc.status, exc.reason)
    try:
        sent = await request.app[BROKER].publish(publication.channel, publication.message())
    except BrokerUnavailable as exc:
        return error(503, str(exc), **{"Retry-After": "1"})
    request.app[METRICS].counts.publishes += 1
    return web.json_response({"channel": publication.channel, "id": sent.id}, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


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
