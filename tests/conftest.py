"""Shared fixtures: real servers on free loopback ports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from broadcaster import create_app
from broadcaster.node.settings import Settings
from tests.support.processes import Node, RedisServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server process for one test."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start `broadcaster serve` processes; all are stopped after the test."""
    nodes: list[Node] = []

    def start(redis_url: str | None = None, **settings: str) -> Node:
        node = Node(redis_url, tmp_path, **settings)
        nodes.append(node)
        node.start()
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def start_app(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> Callable[..., Awaitable[str]]:
    """Start a node in this process (aiohttp test server); returns its base URL."""

    async def start(**settings: Any) -> str:
        server = await aiohttp_server(create_app(Settings(**settings)))
        return str(server.make_url("")).rstrip("/")

    return start


@pytest.fixture(params=["memory", "redis"])
def broker_settings(request: pytest.FixtureRequest, redis_server: RedisServer) -> dict[str, Any]:
    """Settings for a node on each broker in turn: the embedded one, then a real Redis
    (started first, so it outlives the node)."""
    return {} if request.param == "memory" else {"redis_url": redis_server.url}


@pytest.fixture
def redis_pair(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A redis-server primary and its replica (started; not necessarily in sync yet)."""
    # No 5 s wait before the replica's first sync.
    primary = RedisServer(tmp_path / "primary", "--repl-diskless-sync-delay", "0")
    replica = RedisServer(tmp_path / "replica")
    for server in (primary, replica):
        server.workdir.mkdir()
    primary.start()
    replica.extra = ("--replicaof", "127.0.0.1", str(primary.port))
    replica.start()
    yield primary, replica
    replica.kill()
    primary.kill()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the test, with no limit on open connections (streams stay open)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the checkout with the wheel built from it (and its
    dependencies), as a user installs it; returns the venv's directory."""
    where = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where), str(ROOT)],
        check=True,
        cwd=where,
    )
    wheel = next(where.glob("sse_broadcaster-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True)
    subprocess.run(
        [str(where / "venv/bin/pip"), "install", "-q", str(wheel)], check=True, cwd=where
    )
    return where / "venv"
