"""Debian's Chromium, driven by Playwright, as the browser tests use it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, async_playwright

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
