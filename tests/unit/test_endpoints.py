"""Who may call each endpoint under each auth mode: every cell of the endpoint table in
docs/endpoints.md, and the table lists every route a node serves."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broadcaster import create_app
from broadcaster.settings import Settings
from tests.support.tokens import SECRET, token

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
PAGE = Path(__file__).resolve().parents[2] / "docs" / "endpoints.md"
ORIGIN = "https://app.example"

MODES: dict[str, dict[str, Any]] = {
    "none": {},
    "publish token": {"publish_token": "s3cret"},
    "jwt": {"jwt_secret": SECRET},
}
CALLERS = ("anonymous", "publish token", "jwt allowing demo:*", "jwt allowing nothing")

# (method, path, body or None): the requests each row of the table makes.
REQUESTS: dict[str, tuple[str, str, dict[str, str] | None]] = {
    "GET /events": ("GET", "/events?channel=demo:x", None),
    "GET /presence": ("GET", "/presence?channel=demo:x", None),
    "GET /presence?clients=1": ("GET", "/presence?channel=demo:x&clients=1", None),
    "POST /publish": ("POST", "/publish", {"channel": "demo:x", "data": "x"}),
    "POST /demo/ask": ("POST", "/demo/ask", {"channel": "demo:x", "prompt": "x"}),
}
# The status each caller gets, per endpoint and mode (in CALLERS' order).
EXPECTED: dict[tuple[str, str], tuple[int, int, int, int]] = {
    ("GET /events", "none"): (200, 200, 200, 200),
    ("GET /events", "publish token"): (200, 200, 200, 200),
    ("GET /events", "jwt"): (401, 401, 200, 403),
    ("GET /presence", "none"): (200, 200, 200, 200),
    ("GET /presence", "publish token"): (200, 200, 200, 200),
    ("GET /presence", "jwt"): (401, 401, 200, 403),
    ("GET /presence?clients=1", "none"): (200, 200, 200, 200),
    ("GET /presence?clients=1", "publish token"): (200, 200, 200, 200),
    ("GET /presence?clients=1", "jwt"): (401, 401, 200, 403),
    ("POST /publish", "none"): (403, 403, 403, 403),
    ("POST /publish", "publish token"): (401, 200, 401, 401),
    ("POST /publish", "jwt"): (401, 401, 200, 403),
    ("POST /demo/ask", "none"): (202, 202, 202, 202),
    ("POST /demo/ask", "publish token"): (401, 202, 401, 401),
    ("POST /demo/ask", "jwt"): (401, 401, 202, 403),
}
OPEN_TO_ALL = ("GET /", "GET /dashboard", "GET /cluster", "GET /healthz", "GET /readyz",
               "GET /metrics")  # fmt: skip


def credentials(caller: str) -> dict[str, str]:
    if caller == "anonymous":
        return {}
    if caller == "publish token":
        return {"Authorization": "Bearer s3cret"}
    claims = ["demo:*"] if caller == "jwt allowing demo:*" else []
    return {"Authorization": f"Bearer {token(subscribe=claims, publish=claims)}"}


async def status_of(client: Client, endpoint: str, headers: dict[str, str]) -> int:
    method, path = endpoint.split()
    body = None
    if endpoint in REQUESTS:
        method, path, body = REQUESTS[endpoint]
    async with client.request(method, path, json=body, headers=headers) as answer:
        return answer.status


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("endpoint", REQUESTS)
async def test_who_may_call(aiohttp_client: MakeClient, endpoint: str, mode: str) -> None:
    client = await aiohttp_client(create_app(Settings(demo_token_delay=0, **MODES[mode])))
    got = tuple([await status_of(client, endpoint, credentials(c)) for c in CALLERS])
    assert got == EXPECTED[endpoint, mode], dict(zip(CALLERS, got, strict=True))


@pytest.mark.parametrize("mode", MODES)
async def test_health_metrics_and_demo_pages_are_open(
    aiohttp_client: MakeClient, mode: str
) -> None:
    client = await aiohttp_client(create_app(Settings(**MODES[mode])))
    for endpoint in OPEN_TO_ALL:
        assert await status_of(client, endpoint, {}) == 200, endpoint


@pytest.mark.parametrize("mode", MODES)
async def test_preflights_answer_configured_origins_only(
    aiohttp_client: MakeClient, mode: str
) -> None:
    client = await aiohttp_client(create_app(Settings(cors_origins=(ORIGIN,), **MODES[mode])))
    for path in ("/events", "/publish", "/presence"):
        for origin, status in ((ORIGIN, 204), ("https://evil.example", 403)):
            headers = {"Origin": origin, "Access-Control-Request-Method": "GET"}
            async with client.options(path, headers=headers) as answer:
                assert answer.status == status, (path, origin)


@pytest.mark.parametrize("mode", MODES)
async def test_with_the_demo_off_its_endpoints_refuse(
    aiohttp_client: MakeClient, mode: str
) -> None:
    client = await aiohttp_client(create_app(Settings(demo="off", **MODES[mode])))
    for caller in CALLERS:
        assert await status_of(client, "POST /demo/ask", credentials(caller)) == 403
    for endpoint in ("GET /", "GET /dashboard", "GET /cluster"):
        assert await status_of(client, endpoint, {}) == 404, endpoint


def documented_endpoints() -> set[str]:
    """`METHOD /path` of every row of the endpoint table (the page's one table)."""
    rows = [line for line in PAGE.read_text().splitlines() if line.startswith("| `")]
    return {e for row in rows for e in re.findall(r"`([A-Z]+ /[^`]*)`", row.split("|")[1])}


async def test_the_table_lists_every_route(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(create_app(Settings()))
    served = {
        f"{route.method} {route.resource.canonical}"
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert documented_endpoints() == served
