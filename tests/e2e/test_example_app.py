"""examples/fastapi_chat end to end: uvicorn runs the app beside a real node on Redis;
Chromium asks, and the page shows the whole answer."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from broadcaster.cluster.processes import free_port, settings_env, spawn, stop, wait_for_port
from tests.support.browser import chromium
from tests.support.processes import Node, RedisServer

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_chat"
sys.path.insert(0, str(EXAMPLE))
from app import reply  # noqa: E402  (the example is not a package)

TOKEN = "s3cret"


@pytest.fixture(params=["through the node", "straight to redis", "with a wrong token"])
def example(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    start_node: Callable[..., Node],
    tmp_path: Path,
) -> Iterator[tuple[int, str]]:
    """The app's port, and how it publishes."""
    port = free_port()
    # As its README says: both addresses the page may be opened at are allowed origins.
    origins = f"http://localhost:{port},http://127.0.0.1:{port}"
    node = start_node(redis_server.url, cors_origins=origins, publish_token=TOKEN)
    settings = {"url": node.url}
    if request.param == "straight to redis":
        settings["redis_url"] = redis_server.url
    else:
        settings["publish_token"] = TOKEN if request.param == "through the node" else "no"
    env = {**settings_env(settings, inherit=False), "EXAMPLE_TOKEN_DELAY": "0.02"}
    app = spawn(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)],
        log=tmp_path / "uvicorn.log",
        env=env,
        cwd=EXAMPLE,
    )
    try:
        wait_for_port(port, timeout=20, process=app)
        yield port, request.param
    finally:
        stop(app)


async def test_the_example_streams_a_whole_answer_to_the_page(example: tuple[int, str]) -> None:
    port, publishing = example
    async with chromium() as browser:
        for host in ("127.0.0.1", "localhost"):  # what uvicorn prints, and the other name
            page = await ask(browser, f"http://{host}:{port}", f"Why SSE, {host}?")
            await page.wait_for_function(
                "document.getElementById('state').textContent !== ''", timeout=20_000
            )
            state = await page.text_content("#state")
            if publishing == "with a wrong token":
                assert state == "publishing refused: 401: missing or wrong bearer token"
                assert await page.text_content("#answer") == ""
            else:
                assert state == "done"
                assert await page.text_content("#answer") == reply(f"Why SSE, {host}?")


async def ask(browser: Browser, url: str, prompt: str) -> Page:
    page = await browser.new_page()
    await page.goto(url)
    await page.fill("#prompt", prompt)
    await page.click("button")
    return page
