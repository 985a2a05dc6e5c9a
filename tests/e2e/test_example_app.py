"""examples/fastapi_chat end to end: uvicorn runs the app beside a real node on Redis;
Chromium asks, and the page shows the whole answer."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from tests.support.browser import chromium
from tests.support.processes import Node, RedisServer, free_port, wait_port

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_chat"
sys.path.insert(0, str(EXAMPLE))
from app import reply  # noqa: E402  (the example is not a package)


@pytest.fixture
def example(
    redis_server: RedisServer, start_node: Callable[..., Node], tmp_path: Path
) -> Iterator[str]:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    node = start_node(redis_server.url, cors_origins=origin)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROADCASTER_")}
    env.update(
        BROADCASTER_REDIS_URL=redis_server.url,
        BROADCASTER_PUBLIC_URL=node.url,
        EXAMPLE_TOKEN_DELAY="0.02",
    )
    with (tmp_path / "uvicorn.log").open("wb") as log:
        app = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)],
            cwd=EXAMPLE,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(port, timeout=20)
        yield origin
    finally:
        app.terminate()
        app.wait(timeout=15)


async def test_the_example_streams_a_whole_answer_to_the_page(example: str) -> None:
    async with chromium() as browser:
        page = await ask(browser, example, "Why SSE?")
        await page.wait_for_function(
            "document.getElementById('state').textContent === 'done'", timeout=20_000
        )
        assert await page.text_content("#answer") == reply("Why SSE?")


async def ask(browser: Browser, url: str, prompt: str) -> Page:
    page = await browser.new_page()
    await page.goto(url)
    await page.fill("#prompt", prompt)
    await page.click("button")
    return page
