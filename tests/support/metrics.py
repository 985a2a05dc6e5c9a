"""A node's /metrics as the tests read it: the value of one series."""

from __future__ import annotations

import urllib.request

import aiohttp


def value(scrape: str, series: str) -> float:
    """The value of `series` (`name` or `name{labels}`) in the text of a /metrics scrape."""
    for line in scrape.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {series} in /metrics")


def metric_sync(base: str, series: str) -> float:
    """The value of `series` in the /metrics of the node at `base`, now."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
        return value(answer.read().decode(), series)


async def metric(session: aiohttp.ClientSession, base: str, series: str) -> float:
    """The value of `series` in the /metrics of the node at `base`, now."""
    async with session.get(f"{base}/metrics") as answer:
        return value(await answer.text(), series)
