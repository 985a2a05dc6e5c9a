"""The load balancer's TLS server speaks HTTP/2: a real Chromium keeps more than six
EventSource streams open to one origin (over HTTP/1.1 it stops at six)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import BrowserContext

from tests.support.browser import chromium
from tests.support.cluster import fcall_publish, local_cluster

pytestmark = pytest.mark.slow

STREAMS = 10  # more than the six HTTP/1.1 connections a browser opens per origin

OPEN_STREAMS = """(count) => {
    window.received = [];
    window.sources = [];
    for (let n = 0; n < count; n++) {
        const source = new EventSource(`/events?channel=h2-${n}`);
        window.received.push([]);
        source.onmessage = (event) => window.received[n].push(event.data);
        window.sources.push(source);
    }
}"""
ALL_OPEN = "() => window.sources.every((source) => source.readyState === EventSource.OPEN)"
ALL_RECEIVED = "() => window.received.every((events) => events.length > 0)"
PROTOCOL = "performance.getEntriesByType('navigation')[0].nextHopProtocol"


@pytest.fixture
async def context() -> AsyncIterator[BrowserContext]:
    """A Chromium context that accepts the cluster's self-signed certificate."""
    async with chromium() as browser:
        context = await browser.new_context(ignore_https_errors=True)
        yield context
        await context.close()


async def test_a_browser_holds_ten_streams_to_one_origin_over_http2(
    context: BrowserContext,
) -> None:
    with local_cluster(2, "--tls") as cluster:
        tls, redis = cluster["lb-tls"][0], cluster["redis"][0]
        assert tls.startswith("https://") and cluster["lb-tls"][1] == cluster["lb"][1]
        page = await context.new_page()
        await page.goto(f"{tls}/healthz")
        assert await page.evaluate(PROTOCOL) == "h2"

        await page.evaluate(OPEN_STREAMS, STREAMS)
        await page.wait_for_function(ALL_OPEN, timeout=20_000)
        for n in range(STREAMS):
            await fcall_publish(redis, f"h2-{n}", f"hello-{n}")
        await page.wait_for_function(ALL_RECEIVED, timeout=20_000)
        received = await page.evaluate("window.received")
        assert received == [[f"hello-{n}"] for n in range(STREAMS)]
        await page.close()  # the streams end before the cluster stops
