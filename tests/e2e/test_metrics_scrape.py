"""A real Prometheus scraping a fresh node sees every labelled series at 0."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.processes import Node, Prometheus
from tests.support.wait import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[Node], Prometheus]]:
    started: list[Prometheus] = []

    def start(node: Node) -> Prometheus:
        started.append(Prometheus(tmp_path, [f"127.0.0.1:{node.port}"]))
        return started[-1]

    yield start
    for prometheus in started:
        prometheus.stop()


async def test_rate_queries_see_every_reason_before_the_first_event(
    start_node: Callable[..., Node], prometheus_for: Callable[[Node], Prometheus]
) -> None:
    prometheus = prometheus_for(start_node())
    expected = {
        "broadcaster_connections_rejected_total": {
            "cap",
            "ip_cap",
            "unauthorized",
            "forbidden",
            "bad_request",
            "draining",
            "unavailable",
        },
        "broadcaster_messages_malformed_total": {"utf8", "envelope", "forged"},
    }
    async with aiohttp.ClientSession() as session:

        async def query(expression: str) -> list[dict[str, object]]:
            url = f"{prometheus.url}/api/v1/query"
            async with session.get(url, params={"query": expression}) as answer:
                result: list[dict[str, object]] = (await answer.json())["data"]["result"]
                return result

        async def scraped() -> bool:
            return bool(await query("up == 1"))

        await eventually(scraped, 30, "Prometheus to scrape the node")
        for metric, reasons in expected.items():
            series = await query(metric)
            assert {s["metric"]["reason"] for s in series} == reasons  # type: ignore[index]
            assert {s["value"][1] for s in series} == {"0"}  # type: ignore[index]

            # ... so an alert on the rate of refusals has something to evaluate.
            async def rated(metric: str = metric, reasons: set[str] = reasons) -> bool:
                rates = await query(f"sum by (reason) (rate({metric}[1m]))")
                return len(rates) == len(reasons)

            await eventually(rated, 30, f"a rate of {metric} for every reason")
