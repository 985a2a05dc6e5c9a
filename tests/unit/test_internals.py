"""The fenced seams: what the node takes from aiohttp and redis-py beyond their public
APIs lives in one module per dependency, which refuses other releases by name; and what
the aiohttp seam buys, one write for a stream's headers and preamble, holds."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
import redis
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_writer import StreamWriter
from aiohttp.test_utils import make_mocked_request

from broadcaster.brokers.redis import redis_internals
from broadcaster.node import aiohttp_internals
from broadcaster.node.events.response import EventStreamResponse
from tests.support.fakes import FakeTransport

PACKAGE = Path(__file__).parents[2] / "broadcaster"
FENCES = {PACKAGE / "node/aiohttp_internals.py", PACKAGE / "brokers/redis/redis_internals.py"}
# The private names the fences use; no other module may touch them.
PRIVATE = {"_send_headers_immediately", "_runner", "_backlog", "_server", "_reader", "_writer"}


async def test_a_streams_headers_and_preamble_leave_in_one_write() -> None:
    loop = asyncio.get_running_loop()
    transport = FakeTransport()
    protocol = BaseProtocol(loop)
    protocol.connection_made(transport)
    writer = StreamWriter(protocol, loop)  # aiohttp's own, over the fake transport
    request = make_mocked_request("GET", "/events", writer=writer, transport=transport)
    response = EventStreamResponse()
    await response.prepare(request)
    assert transport.writes == []  # the headers wait for the first bytes of the body
    await response.write(b"retry: 3000\n\n")
    [written] = transport.writes
    assert written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Type: text/event-stream\r\n" in written
    assert written.endswith(b"\r\n\r\nd\r\nretry: 3000\n\n\r\n")  # the preamble's chunk


@pytest.mark.parametrize(
    ("fence", "version", "wanted"),
    [
        (aiohttp_internals, "3.13.3", "aiohttp >=3.14,<3.15"),
        (aiohttp_internals, "4.0.0", "aiohttp >=3.14,<3.15"),
        (redis_internals, "8.1.9", "redis-py >=8.2,<8.3"),
        (redis_internals, "9.0.0", "redis-py >=8.2,<8.3"),
    ],
)
def test_other_releases_are_refused_by_name(fence: ModuleType, version: str, wanted: str) -> None:
    with pytest.raises(ImportError, match=f"needs {wanted} .* this is .* {version}"):
        fence.check(version)


def test_installed_releases_pass() -> None:
    aiohttp_internals.check(aiohttp.__version__)
    redis_internals.check(redis.__version__)


def test_only_the_fences_touch_the_private_names() -> None:
    touching = sorted(
        f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}"
        for path in PACKAGE.rglob("*.py")
        if path not in FENCES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr in PRIVATE
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")  # its own
    )
    assert not touching, "private aiohttp/redis-py names outside their fence: " + str(touching)
