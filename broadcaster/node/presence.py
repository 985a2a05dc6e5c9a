"""`GET /presence`: how many subscribers each channel has, on every node, or why not."""

from __future__ import annotations

from aiohttp import web

from broadcaster.brokers.protocol import BrokerUnavailable
from broadcaster.core.channels import check_channel
from broadcaster.node.auth import AuthError, require
from broadcaster.node.replies import error
from broadcaster.node.state import AUTH, PRESENCE, SETTINGS

routes = web.RouteTableDef()


@routes.get("/presence")
async def presence(request: web.Request) -> web.Response:
    """`{"channels": {<channel>: <subscribers>}, "scope": "cluster" | "node"}` for every
    `channel` in the query string: the same channels, limits and rights as `/events`
    (with a JWT: its `subscribe` or `presence` patterns cover each channel)."""
    channels = list(dict.fromkeys(request.query.getall("channel", [])))
    if not channels:
        return error(400, "missing channel: use /presence?channel=<name>")
    limit = request.app[SETTINGS].max_channels_per_connection
    if len(channels) > limit:
        return error(400, f"too many channels: at most {limit} per request")
    try:
        for channel in channels:
            check_channel(channel)
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
    except BrokerUnavailable:
        return error(503, "broker unavailable: this node cannot read presence from Redis now")
    scope = "cluster" if tracker.shared else "node"
    return web.json_response({"channels": counts, "scope": scope})
