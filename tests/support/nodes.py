"""Nodes as the tests start them, and the types of the fixtures that start them
(tests/conftest.py): `start_client` and `start_app` run a node in this process (aiohttp's
test client or server), `start_broker_app` on each broker in turn, `start_node` a
`broadcaster serve` process (tests/support/processes.Node)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.processes import Node

Client = TestClient[web.Request, web.Application]  # a node under aiohttp's test client
MakeClient = Callable[..., Awaitable[Client]]  # pytest-aiohttp's aiohttp_client
MakeServer = Callable[[web.Application], Awaitable[TestServer]]  # its aiohttp_server
StartClient = Callable[..., Awaitable[Client]]  # start_client: settings -> the client
StartApp = Callable[..., Awaitable[str]]  # start_app, start_broker_app: settings -> base URL
StartNode = Callable[..., Node]  # start_node: (redis URL, settings) -> the process


def base_url(node: Client | TestServer) -> str:
    """The base URL of a node in this process, without the trailing slash."""
    return str(node.make_url("")).rstrip("/")
