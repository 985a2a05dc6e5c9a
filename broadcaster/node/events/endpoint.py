"""`GET /events`: admit a subscriber (channels, start, auth, caps), or refuse it politely."""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import partial

from aiohttp import web

from broadcaster.core.channels import check_channel
from broadcaster.core.history import Start
from broadcaster.core.metrics import RejectReason
from broadcaster.core.sse import encode_comment, encode_retry, jittered_retry
from broadcaster.node.auth import AuthError, require
from broadcaster.node.events.response import STREAM_HEADERS, EventStreamResponse
from broadcaster.node.limits import client_ip
from broadcaster.node.replies import error
from broadcaster.node.state import AUTH, BROKER, LIMITER, METRICS, SETTINGS, STATE, TRUSTED_PROXIES

MAX_TAIL = 10_000
_TAIL = re.compile(r"[0-9]{1,5}")

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
    token_expires = math.inf
    identity = None
    if auth.enabled:
        try:
            grant = auth.grant(request)
            require(grant.subscribe, channels, "subscribe")
            identity = grant.identity()
        except AuthError as exc:
            reason: RejectReason = "unauthorized" if exc.status == 401 else "forbidden"
            return refuse(rejected, reason, exc.status, exc.reason)
        if settings.token_expiry == "end":
            token_expires = grant.expires
    if not request.app[BROKER].connected:
        # Without its broker a node can confirm no subscription, and the headers mean one
        # is confirmed: refuse as /readyz does, politely (load balancers move on).
        rejected["unavailable"] += 1
        return await overloaded(request, "unavailable")
    ip = client_ip(request, request.app[TRUSTED_PROXIES])
    limiter = request.app[LIMITER]
    refused = limiter.acquire(ip)
    if refused is not None:
        rejected[refused] += 1
        return await overloaded(request, refused)
    request.app[METRICS].counts.connections_opened += 1
    response = EventStreamResponse()
    await response.serve(
        request,
        channels,
        start,
        release=partial(limiter.release, ip),
        token_expires=token_expires,
        identity=identity,
    )
    return response


def requested_start(request: web.Request) -> Start | None:
    """Where the client asks its stream to begin: after its Last-Event-ID (the header,
    then `lastEventId`; `earliest` for all that is retained), else at the newest `tail`
    messages; None for live only. Raises ValueError for a bad `tail`.

    A browser reconnects with the same URL and a Last-Event-ID header, so the header
    wins over `tail` and over `lastEventId=earliest`: it resumes where it stopped.
    """
    tail = request.query.get("tail")
    if tail is not None and not (_TAIL.fullmatch(tail) and int(tail) <= MAX_TAIL):
        raise ValueError(f"tail must be a whole number from 0 to {MAX_TAIL}")
    after = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    if after:
        return Start.resume(after)
    return None if tail is None else Start(tail=int(tail))


def refuse(
    rejected: Counter[RejectReason], reason: RejectReason, status: int, text: str, **headers: str
) -> web.Response:
    """Count a refused subscription by reason, and answer it."""
    rejected[reason] += 1
    return error(status, text, **headers)


REFUSALS: dict[RejectReason, tuple[int, str]] = {
    "cap": (503, "node is at its connection cap"),
    "ip_cap": (429, "too many connections from this address"),
    "unavailable": (503, "broker unavailable: this node cannot reach Redis right now"),
}


async def overloaded(request: web.Request, reason: RejectReason) -> web.StreamResponse:
    """Refuse a subscriber for now: 503 or 429 for load balancers, or 200 and a later retry.

    A browser's EventSource gives up for good on any status but 200, so the `retry`
    mode answers 200 with a jittered `retry:` and closes: the browser comes back later.
    """
    settings = request.app[SETTINGS]
    delay_ms = jittered_retry(settings.retry_ms)
    if settings.overload_response == "retry":
        response = web.StreamResponse(headers=STREAM_HEADERS)
        await response.prepare(request)
        await response.write_eof(encode_retry(delay_ms) + encode_comment(f" {reason}"))
        return response
    status, text = REFUSALS[reason]
    return error(status, text, **{"Retry-After": str(max(1, round(delay_ms / 1000)))})
