"""Structured logs carry the node id; the access log leaves out streams."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import aiohttp
import orjson

from tests.support.client import subscribe
from tests.support.processes import Node
from tests.support.wait import wait_until


async def test_json_logs_with_the_node_id_and_no_stream_access_lines(
    start_node: Callable[..., Node],
) -> None:
    node = start_node(log_format="json")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{node.url}/healthz") as answer:
            assert answer.status == 200
        async with subscribe(session, node.url, ["quiet"]):
            pass
    node.signal(signal.SIGTERM)
    assert node.process is not None
    assert node.process.wait(timeout=15) == 0
    lines = [orjson.loads(line) for line in node.log.read_text().splitlines() if line]
    assert lines and all(line["node"] == f"node-{node.port}" for line in lines)
    access = [line["message"] for line in lines if line["logger"] == "broadcaster.access"]
    assert any("GET /healthz" in message for message in access)
    assert not any("/events" in message for message in access)
    assert any("listening on" in line["message"] for line in lines)


async def test_malformed_requests_make_one_line_and_tokens_stay_out_of_the_log(
    start_node: Callable[..., Node],
) -> None:
    node = start_node()
    for _ in range(5):  # a scanner's garbage: aiohttp logged a traceback for each
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.0 400")
        writer.close()
    secret = "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{node.url}/healthz", params={"token": secret}) as answer,
    ):
        assert answer.status == 200
    await wait_until(lambda: "GET /healthz?token=" in node.log.read_text(), 5, "the access line")
    log = node.log.read_text()
    assert "Traceback" not in log
    malformed = [line for line in log.splitlines() if "Error handling request" in line]
    assert len(malformed) == 1, malformed
    assert "WARNING" in malformed[0] and "400 Invalid character in Content-Length" in malformed[0]
    assert secret not in log
    assert "GET /healthz?token=*** HTTP/1.1" in log
