"""Answers that close, in a real Chromium: its EventSource gets every event of the answer
and then the end of the stream; the one reconnect it makes is answered 204 No Content,
and it stops for good: no reconnect after the close, as Chromium's own responses and the
nodes' metrics (of every request) say. On each broker, and through the balancer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from playwright.async_api import Browser

from broadcaster import HttpPublisher
from tests.support.browser import chromium, listen
from tests.support.cluster import local_cluster
from tests.support.metrics import metric_sync
from tests.support.processes import Node
from tests.support.publish import TOKEN

pytestmark = pytest.mark.slow

CHANNEL = "answer"
CHUNKS = ["Browsers ", "stop ", "on ", "204."]
RETRY_MS = "100"  # a quick `retry:`: the reconnect after the end comes at once
COUNTERS = (
    "broadcaster_connections_total",
    "broadcaster_streams_closed_total",
    "broadcaster_no_content_total",
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


def counters(nodes: list[str]) -> tuple[int, ...]:
    """COUNTERS, summed over the nodes."""
    return tuple(int(sum(metric_sync(node, name) for node in nodes)) for name in COUNTERS)


async def answers_then_stops(browser: Browser, base: str, nodes: list[str]) -> None:
    """A page follows an answer live to its close, then one opens after it: each gets every
    event once, in order, then the end; its reconnect gets 204 and it stops."""
    live = await listen(browser, base, f"/events?channel={CHANNEL}&lastEventId=earliest")
    async with HttpPublisher(base, TOKEN) as publisher:
        ids = await publisher.stream(CHANNEL, CHUNKS)  # tokens, then `done`, which closes
    log = await live.stopped()
    events = [e for e in log if e["kind"] not in ("open", "error")]
    assert [(e["kind"], e["id"]) for e in events] == [
        *(("token", id_) for id_ in ids[:-1]),
        ("done", ids[-1]),
    ]
    assert [e["data"] for e in events[:-1]] == CHUNKS
    # Open, the events, the end (CONNECTING again), the 204 (CLOSED): no other request.
    opened, error = {"kind": "open", "state": 1}, {"kind": "error", "state": 0}
    assert log == [opened, *events, error, {"kind": "error", "state": 2}]
    assert await live.responses(2) == [200, 204]
    assert counters(nodes) == (2, 1, 1)  # 2 requests: 1 stream ended by the close, 1 204

    # A page opened after the close: all that is retained, the end, then one 204.
    late = await listen(browser, base, f"/events?channel={CHANNEL}&lastEventId=earliest")
    assert await late.stopped() == log
    assert await late.responses(2) == [200, 204]
    assert await live.log() == log and live.statuses == [200, 204], "the first page came back"
    assert counters(nodes) == (4, 2, 2)


async def test_a_closed_answer_stops_the_eventsource(
    browser: Browser, broker_settings: dict[str, Any], start_node: Callable[..., Node]
) -> None:
    # On the embedded broker, then on Redis (which outlives the node).
    node = start_node(**broker_settings, retry_ms=RETRY_MS, publish_token=TOKEN)
    await answers_then_stops(browser, node.url, [node.url])


async def test_a_closed_answer_stops_the_eventsource_through_the_balancer(
    browser: Browser,
) -> None:
    with local_cluster(2, retry_ms=RETRY_MS, publish_token=TOKEN) as cluster:
        nodes = [address for name, (address, _) in cluster.items() if name.startswith("node")]
        assert len(nodes) == 2
        await answers_then_stops(browser, cluster["lb"][0], nodes)
