"""Structured logs carry the node id; the access log leaves out streams."""

from __future__ import annotations

import signal
from collections.abc import Callable

import aiohttp
import orjson

from tests.support.client import subscribe
from tests.support.processes import Node


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
