"""The chat demo in a real Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page

from broadcaster.demo.answer import simulated_answer
from tests.support.browser import chromium
from tests.support.cluster import local_cluster
from tests.support.processes import Node
from tests.support.publish import publish

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PROMPT = "Why do browsers reconnect?"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


async def open_chat(browser: Browser, url: str) -> Page:
    page = await browser.new_page(viewport={"width": 900, "height": 560})
    await page.goto(url)
    await page.wait_for_function("document.getElementById('node').textContent !== '?'")
    return page


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def ask(page: Page) -> None:
    await page.fill("#prompt", PROMPT)
    await page.click("button[type=submit]")


async def tokens(page: Page) -> list[dict[str, str]]:
    events: list[dict[str, str]] = await page.evaluate("window.received")
    return [event for event in events if event["type"] == "token"]


async def test_the_answer_renders_completely_and_in_order(
    browser: Browser, start_node: Callable[..., Node]
) -> None:
    node = start_node(demo_token_delay="0.01")
    page = await open_chat(browser, node.url)
    assert await page.text_content("#state") == "connected"
    await ask(page)
    await page.wait_for_selector("body[data-done=yes]", timeout=30_000)
    await shot(page, "chat-answer")
    assert await page.evaluate("window.answerText()") == simulated_answer(PROMPT)
    ids = [event["id"] for event in await tokens(page)]
    assert ids == sorted(ids, key=lambda i: int(i.split("-")[1])) and len(set(ids)) == len(ids)


async def test_the_answer_survives_its_node_being_killed(browser: Browser) -> None:
    with local_cluster(2, "--demo", demo_token_delay="0.08", retry_ms="300") as cluster:
        page = await open_chat(browser, cluster["lb"][0])
        serving = await page.text_content("#node")
        assert serving in cluster
        await ask(page)
        await page.wait_for_function(
            "window.received.filter(e => e.type === 'token').length >= 8", timeout=20_000
        )
        os.kill(cluster[str(serving)][1], signal.SIGKILL)  # mid-answer
        await page.wait_for_function(
            "document.getElementById('state').textContent === 'resumed'", timeout=20_000
        )
        await page.wait_for_selector("body[data-done=yes]", timeout=30_000)
        await shot(page, "chat-after-failover")
        assert await page.text_content("#node") != serving
        assert await page.evaluate("window.answerText()") == simulated_answer(PROMPT)
        ids = [event["id"] for event in await tokens(page)]
        assert len(set(ids)) == len(ids), "no token twice"


TRICKY = [
    "windows\r\nline endings",
    "a lone\rcarriage return",
    "blank\n\nlines\n\n",
    "   leading spaces",
    ": a colon first\n:and again",
    "emoji 🚀🎉 and accents é ü 中文",
    "",
    "x" * 65_536,
]


async def test_tricky_payloads_arrive_exactly(
    browser: Browser, start_node: Callable[..., Node]
) -> None:
    node = start_node(publish_token="t")
    page = await open_chat(browser, node.url)
    channel = await page.text_content("#channel")
    async with aiohttp.ClientSession() as session:
        for data in TRICKY:
            await publish(session, node.url, channel or "", data)
    await page.wait_for_function(f"window.received.length >= {len(TRICKY)}", timeout=20_000)
    received = [event["data"] for event in await page.evaluate("window.received")]
    assert received == [d.replace("\r\n", "\n").replace("\r", "\n") for d in TRICKY]


async def test_the_dashboard_shows_the_nodes(browser: Browser) -> None:
    with local_cluster(2) as cluster:
        page = await browser.new_page()
        await page.goto(f"{cluster['lb'][0]}/dashboard")
        await page.wait_for_function(
            "document.querySelectorAll('#nodes tr').length === 2", timeout=20_000
        )
        await shot(page, "dashboard")
        rows = await page.eval_on_selector_all(
            "#nodes tr td:first-child", "c => c.map(x => x.textContent)"
        )
        assert rows == ["node1", "node2"]


async def test_a_page_opened_mid_answer_shows_the_whole_answer(
    browser: Browser, start_node: Callable[..., Node]
) -> None:
    node = start_node(demo_token_delay="0.05")
    first = await open_chat(browser, node.url)
    channel = await first.text_content("#channel")
    await ask(first)
    await first.wait_for_function(
        "window.received.filter(e => e.type === 'token').length >= 8", timeout=20_000
    )
    # A second device joins the same channel mid-answer (lastEventId=earliest).
    second = await open_chat(browser, f"{node.url}/?channel={channel}")
    for page in (first, second):
        await page.wait_for_selector("body[data-done=yes]", timeout=30_000)
    await shot(second, "chat-late-joiner")
    assert await second.evaluate("window.answerText()") == simulated_answer(PROMPT)
    assert await second.evaluate("window.answerText()") == await first.evaluate(
        "window.answerText()"
    )
    assert [e["id"] for e in await tokens(second)] == [e["id"] for e in await tokens(first)]
