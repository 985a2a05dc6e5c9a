"""Shared fixtures: real servers on free loopback ports."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broadcaster import create_app
from broadcaster.settings import Settings
from tests.support.nodes import (
    Client,
    MakeClient,
    MakeServer,
    StartApp,
    StartClient,
    StartNode,
    base_url,
)
from tests.support.processes import Node, RedisServer
from tests.support.publish import TOKEN
from tests.support.redis_cluster import RedisClusterGroup

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server process for one test."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[StartNode]:
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
def start_app(aiohttp_server: MakeServer) -> StartApp:
    """Start a node in this process (aiohttp test server); returns its base URL."""

    async def start(**settings: Any) -> str:
        return base_url(await aiohttp_server(create_app(Settings(**settings))))

    return start


@pytest.fixture
def start_client(aiohttp_client: MakeClient) -> StartClient:
    """Start a node in this process with these settings; returns aiohttp's test client
    of it (its `session` and `base_url(client)` for an HTTP client of your own)."""

    async def start(**settings: Any) -> Client:
        return await aiohttp_client(create_app(Settings(**settings)))

    return start


@pytest.fixture(params=["memory", "redis"])
def broker_settings(request: pytest.FixtureRequest, redis_server: RedisServer) -> dict[str, Any]:
    """Settings for a node on each broker in turn: the embedded one, then a real Redis
    (started first, so it outlives the node)."""
    return {} if request.param == "memory" else {"redis_url": redis_server.url}


@pytest.fixture
def start_broker_app(broker_settings: dict[str, Any], start_app: StartApp) -> StartApp:
    """Start a node in this process on each broker in turn (see `broker_settings`), taking
    publishes with the token `tests.support.publish.TOKEN`; returns its base URL."""

    async def start(**settings: Any) -> str:
        return await start_app(**{"publish_token": TOKEN, **broker_settings, **settings})

    return start


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that ran processes says where their logs are: its `tmp_path`, which
    pytest keeps for failed tests (`tmp_path_retention_policy`)."""
    report: pytest.TestReport = yield
    funcargs = getattr(item, "funcargs", {})
    if report.failed and isinstance(funcargs.get("tmp_path"), Path):
        logs = sorted(path.name for path in funcargs["tmp_path"].rglob("*.log"))
        if logs:
            report.sections.append(("logs", f"kept in {funcargs['tmp_path']}: {logs}"))
    return report


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterGroup]:
    """A Redis Cluster: 3 primaries and a replica each, on loopback."""
    group = RedisClusterGroup(tmp_path)
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture(scope="session")
def shared_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterGroup]:
    """One Redis Cluster for the tests that leave its servers alone (each empties it
    first: `clean_redis_cluster`)."""
    group = RedisClusterGroup(tmp_path_factory.mktemp("shared-cluster"))
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture
def clean_redis_cluster(shared_redis_cluster: RedisClusterGroup) -> RedisClusterGroup:
    """The shared Redis Cluster, emptied, every replica linked to its primary."""
    deadline = time.monotonic() + 30
    while not (shared_redis_cluster.replicas_linked() and shared_redis_cluster.settled()):
        assert time.monotonic() < deadline, "the shared cluster did not settle"
        time.sleep(0.05)
    shared_redis_cluster.flush()
    return shared_redis_cluster
