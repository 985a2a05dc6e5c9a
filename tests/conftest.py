"""Shared fixtures: real servers on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import Node, RedisServer


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
