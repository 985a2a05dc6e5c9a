"""`GET /presence`: how many subscribers each channel has on every node, and who, or why
not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from broadcaster.brokers.protocol import BrokerUnavailable
from broadcaster.core.channels import check_channel
from broadcaster.core.identity import MAX_SUB, AttendeePage
from broadcaster.node.auth import AuthError, require
from broadcaster.node.replies import error
from broadcaster.node.state import AUTH, PRESENCE, SETTINGS

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000
"""Identified subscribers per page (`limit`) by default, and at most."""

routes = web.RouteTableDef()


@routes.get("/presence")
async def presence(request: web.Request) -> web.Response:
    """`{"channels": {<channel>: <subscribers>}, "scope": "cluster" | "node"}` for every
    `channel` in the query string: the same channels, limits and rights as `/events`
    (with a JWT: its `subscribe` or `presence` patterns cover each channel). With
    `clients=1` (one channel), also a page of its identified subscribers: `clients`
    (`sub`, `info`, `connections`) by `sub`, and `next`, the `after` of the next page."""
    query = request.query
    channels = list(dict.fromkeys(query.getall("channel", [])))
    if not channels:
        return error(400, "missing channel: use /presence?channel=<name>")
    limit = request.app[SETTINGS].max_channels_per_connection
    if len(channels) > limit:
        return error(400, f"too many channels: at most {limit} per request")
    try:
        for channel in channels:
            check_channel(channel)
        listing = _listing(query, channels)
    except ValueError as exc:
        return error(400, str(exc))
    auth = request.app[AUTH]
    if auth.enabled:
        try:
            grant = auth.grant(request)
            require(grant.subscribe + grant.presence, channels, "presence")
        except AuthError as exc:
            return exc.response()
    tracker = request.app[PRESENCE]
    try:
        counts = await tracker.counts(channels)
        page = None if listing is None else await tracker.attendees(channels[0], *listing)
    except BrokerUnavailable:
        return error(503, "broker unavailable: this node cannot read presence from Redis now")
    body: dict[str, Any] = {"channels": counts, "scope": "cluster" if tracker.shared else "node"}
    if page is not None:
        body |= _clients(page)
    return web.json_response(body)


def _listing(query: Mapping[str, str], channels: list[str]) -> tuple[str | None, int] | None:
    """`(after, limit)` when the request lists clients, else None; ValueError if bad."""
    clients = query.get("clients", "0")
    if clients not in ("0", "1"):
        raise ValueError("clients must be 0 or 1")
    if clients == "0":
        return None
    if len(channels) != 1:
        raise ValueError("clients=1 lists one channel at a time")
    raw = query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    after = query.get("after") or None
    if after is not None and (len(after) > MAX_SUB or "\x00" in after):
        raise ValueError(f"after must be a sub: at most {MAX_SUB} characters, without NUL")
    return after, int(raw)


def _clients(page: AttendeePage) -> dict[str, Any]:
    """The page as JSON: each `info` is JSON text already, parsed back to a value."""
    clients = [
        {"sub": a.sub, "info": orjson.loads(a.info), "connections": a.connections}
        for a in page.attendees
    ]
    return {"clients": clients, "next": page.next}
