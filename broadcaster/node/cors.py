"""CORS for browsers on other origins: the exact origin echoed, with credentials, never `*`."""

from __future__ import annotations

from aiohttp import web

from broadcaster.node.state import SETTINGS

ALLOWED_HEADERS = "Authorization, Content-Type, Last-Event-ID"


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` hook: allow a configured origin, streams included."""
    origin = request.headers.get("Origin")
    if origin and origin in request.app[SETTINGS].cors_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers.add("Vary", "Origin")


async def preflight(request: web.Request) -> web.Response:
    """Answer a CORS preflight for a configured origin; refuse any other."""
    origin = request.headers.get("Origin")
    if not origin or origin not in request.app[SETTINGS].cors_origins:
        return web.Response(status=403, text="origin not allowed\n")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
        },
    )
