"""Debian's Chromium, driven by Playwright, as the browser tests use it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from playwright.async_api import Browser, Page, Response, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

from tests.support.wait import wait_until

CHROMIUM = "/usr/bin/chromium"
# As root, without a sandbox; no background requests to Google on this closed network.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def executable() -> str:
    """Chromium's path; a missing binary fails loudly (scripts/test.sh installs it)."""
    assert os.path.exists(CHROMIUM), "chromium is missing: apt-get install chromium"
    return CHROMIUM


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable(), args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


# Opens an EventSource on `path` (of the page's own origin: no CORS) as `window.source`,
# and logs to `window.log` each open and error (with the readyState after it) and each
# event (message, token, done) with its data and lastEventId.
LISTEN = """path => {
  window.log = [];
  const source = window.source = new EventSource(path);
  const state = kind => () => log.push({kind, state: source.readyState});
  source.onopen = state("open");
  source.onerror = state("error");
  const event = e => log.push({kind: e.type, data: e.data, id: e.lastEventId});
  for (const type of ["message", "token", "done"]) source.addEventListener(type, event);
}"""


@dataclass
class Listener:
    """A page with an EventSource (see LISTEN), and the status of each response to it, as
    Chromium got them."""

    page: Page
    statuses: list[int]

    async def log(self) -> list[dict[str, Any]]:
        """Every open, error and event so far."""
        log: list[dict[str, Any]] = await self.page.evaluate("window.log")
        return log

    async def stopped(self, timeout: float = 10_000) -> list[dict[str, Any]]:
        """Wait until the EventSource stopped for good (CLOSED); its log."""
        try:
            await self.page.wait_for_function(
                "window.source.readyState === EventSource.CLOSED", timeout=timeout
            )
        except PlaywrightTimeout:
            raise AssertionError(f"the EventSource did not stop: {await self.log()}") from None
        return await self.log()

    async def responses(self, count: int) -> list[int]:
        """`statuses`, once there are `count` (Playwright may report a response after the
        page saw it)."""
        await wait_until(lambda: len(self.statuses) >= count, what=f"{count} responses")
        return self.statuses


async def listen(browser: Browser, base: str, path: str) -> Listener:
    """A page of the node (or balancer) at `base` with an EventSource on `path` there,
    once it has opened (or failed: its log says which)."""
    page = await browser.new_page()
    await page.goto(f"{base}/healthz")
    statuses: list[int] = []

    def answered(response: Response) -> None:
        if response.request.resource_type == "eventsource":
            statuses.append(response.status)

    page.on("response", answered)
    await page.evaluate(LISTEN, path)
    await page.wait_for_function("window.log.length > 0", timeout=10_000)
    return Listener(page, statuses)
