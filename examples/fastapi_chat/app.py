"""A FastAPI app that streams a (simulated) model's answer through broadcaster.

POST /ask starts the answer in a channel of its own and returns the channel at once; the
page follows it with an EventSource on a broadcaster node, from the earliest event, so
no token is missed even if the answer started before the page subscribed.

From the repository's root (see README.md beside this file):

    python3 -m venv .venv && .venv/bin/pip install -e '.[example]'
    export BROADCASTER_PUBLISH_TOKEN=s3cret
    BROADCASTER_CORS_ORIGINS=http://localhost:8000,http://127.0.0.1:8000 \
        .venv/bin/broadcaster serve &                                   # a node, :8080
    cd examples/fastapi_chat && ../../.venv/bin/uvicorn app:app --port 8000   # this app
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from broadcaster import HttpPublisher, Publisher, PublishError, RedisPublisher

NODE_URL = os.environ.get("BROADCASTER_URL", "http://localhost:8080")  # for publishing
PUBLIC_URL = os.environ.get("BROADCASTER_PUBLIC_URL", NODE_URL)  # where browsers subscribe
MAX_ANSWERS = 20  # answers streaming at once; more get 503
TOKEN_DELAY = float(os.environ.get("EXAMPLE_TOKEN_DELAY", "0.05"))


def publisher() -> Publisher:
    """Straight to Redis when BROADCASTER_REDIS_URL is set, else through the node with its
    publish token."""
    redis_url = os.environ.get("BROADCASTER_REDIS_URL")
    if redis_url:
        return RedisPublisher.from_url(redis_url)
    return HttpPublisher(NODE_URL, os.environ.get("BROADCASTER_PUBLISH_TOKEN", ""))


def reply(prompt: str) -> str:
    """What the simulated model answers (deterministic, so tests can compare)."""
    return f"You asked: {prompt}. Streamed token by token, every viewer sees it whole."


async def model(prompt: str) -> AsyncIterator[str]:
    """A stand-in for an LLM client's async stream of text chunks."""
    for n, word in enumerate(reply(prompt).split(" ")):
        await asyncio.sleep(TOKEN_DELAY)
        yield word if n == 0 else " " + word


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with publisher() as shared:
        app.state.publisher = shared
        app.state.answering = set()
        yield


app = FastAPI(lifespan=lifespan)


class Question(BaseModel):
    prompt: str = Field(min_length=1, max_length=500)


@app.post("/ask", status_code=202)
async def ask(question: Question, background: BackgroundTasks) -> dict[str, str]:
    """Start streaming an answer; returns its channel."""
    answering: set[str] = app.state.answering
    if len(answering) >= MAX_ANSWERS:
        raise HTTPException(503, "too many answers under way; try again shortly")
    channel = f"answer:{uuid.uuid4().hex}"
    try:  # the question opens the channel: a refusal is told now, not left to an empty page
        await app.state.publisher.publish(channel, question.prompt, event="question")
    except PublishError as exc:
        raise HTTPException(502, f"publishing refused: {exc}") from exc
    answering.add(channel)

    async def answer() -> None:
        try:
            # The words of each 50 ms go out as one `token` event: however fast a model
            # writes, at most ~20 events a second reach every viewer.
            await app.state.publisher.stream(channel, model(question.prompt), coalesce=0.05)
        finally:
            answering.discard(channel)

    background.add_task(answer)
    return {"channel": channel}


@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    """The page: ask, then follow the answer's channel on the node."""
    return PAGE.replace("{{NODE}}", PUBLIC_URL)


PAGE = """<!doctype html>
<meta charset="utf-8"><title>broadcaster + FastAPI</title>
<form id="ask"><input id="prompt" value="What is SSE?" size="40"> <button>Ask</button></form>
<p id="answer"></p><p id="state"></p>
<script>
const node = "{{NODE}}";
const $ = (id) => document.getElementById(id);
$("ask").onsubmit = async (event) => {
  event.preventDefault();
  $("answer").textContent = "";
  $("state").textContent = "";
  const reply = await fetch("/ask", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({prompt: $("prompt").value})});
  const body = await reply.json();
  if (!reply.ok) {
    $("state").textContent = typeof body.detail === "string" ? body.detail : reply.statusText;
    return;
  }
  const channel = body.channel;
  // From the earliest event: tokens published before this line are not lost.
  const source = new EventSource(`${node}/events?channel=${channel}&lastEventId=earliest`);
  source.addEventListener("token", (e) => { $("answer").textContent += e.data; });
  source.addEventListener("done", () => { source.close(); $("state").textContent = "done"; });
  source.addEventListener("error", (e) => { if (e.data) $("state").textContent = e.data; });
};
</script>
"""
