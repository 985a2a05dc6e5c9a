"""The demo pages (/ and /dashboard) and what they call: /demo/ask and /cluster."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from importlib import resources

import orjson
import redis.asyncio as redis
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.exceptions import RedisError

from .channels import check_channel
from .demo import job, job_queue, stream_answer
from .state import BROKER, HUB, METRICS, SETTINGS

routes = web.RouteTableDef()
REDIS = web.AppKey("redis", redis.Redis)
DEMO_TASKS = web.AppKey("demo_tasks", set[asyncio.Task[None]])
STATS_TTL = 5.0


def _page(name: str) -> web.Response:
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type="text/html", charset="utf-8")


@routes.get("/")
async def chat_page(request: web.Request) -> web.Response:
    """The streaming chat demo."""
    return _page("index.html")


@routes.get("/dashboard")
async def dashboard_page(request: web.Request) -> web.Response:
    """A live view of the cluster."""
    return _page("dashboard.html")


class Question(BaseModel):
    """The body of POST /demo/ask."""

    model_config = ConfigDict(extra="forbid")

    channel: str
    prompt: str = Field(max_length=500)

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        return check_channel(value)


def demo_here(app: web.Application) -> bool:
    """Whether this node answers questions itself (else it queues them for a producer)."""
    setting = app[SETTINGS].demo
    return setting == "on" or (setting == "auto" and app[SETTINGS].redis_url is None)


@routes.post("/demo/ask")
async def ask(request: web.Request) -> web.Response:
    """Start a simulated answer on the asker's channel."""
    settings = request.app[SETTINGS]
    try:
        question = Question.model_validate(orjson.loads(await request.read()))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        return web.Response(status=400, text=f"bad question: {exc}".splitlines()[0] + "\n")
    if demo_here(request.app):
        task = asyncio.create_task(
            stream_answer(
                request.app[BROKER].publish,
                question.channel,
                question.prompt,
                settings.demo_token_delay,
            )
        )
        request.app[DEMO_TASKS].add(task)
        task.add_done_callback(request.app[DEMO_TASKS].discard)
        producer = settings.node_id
    elif REDIS in request.app:
        try:
            queue = job_queue(settings.channel_prefix)
            await request.app[REDIS].rpush(queue, job(question.channel, question.prompt))
        except RedisError as exc:
            return web.Response(status=503, text=f"redis unavailable: {exc}\n")
        producer = "queue"
    else:
        return web.Response(status=403, text="the demo is off: set BROADCASTER_DEMO=on\n")
    return web.json_response({"channel": question.channel, "producer": producer}, status=202)


def _stats(app: web.Application) -> dict[str, object]:
    counts = app[METRICS].counts
    return {
        "node": app[SETTINGS].node_id,
        "connections": app[HUB].stream_count,
        "events_sent": counts.events_sent,
        "time": time.time(),
    }


@routes.get("/cluster")
async def cluster(request: web.Request) -> web.Response:
    """Every live node's counters (from Redis), or just this node's without Redis."""
    nodes = [_stats(request.app)]
    if REDIS in request.app:
        try:
            raw = await request.app[REDIS].hgetall(request.app[SETTINGS].channel_prefix + "nodes")
        except RedisError:
            raw = {}
        fresh = [orjson.loads(value) for value in raw.values()]
        others = [n for n in fresh if time.time() - n["time"] < STATS_TTL]
        nodes = sorted(
            {n["node"]: n for n in [*others, *nodes]}.values(), key=lambda n: str(n["node"])
        )
    return web.json_response({"nodes": nodes}, dumps=lambda v: orjson.dumps(v).decode())


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """With Redis: a client for the demo queue, and a task reporting this node's counters."""
    app[DEMO_TASKS] = set()
    settings = app[SETTINGS]
    reporter = None
    if settings.redis_url is not None:
        app[REDIS] = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, protocol=2)
        reporter = asyncio.create_task(_report(app), name="node-stats")
    yield
    for task in [*app[DEMO_TASKS], *([reporter] if reporter else [])]:
        task.cancel()
    if REDIS in app:
        await app[REDIS].aclose()


async def _report(app: web.Application) -> None:
    key = app[SETTINGS].channel_prefix + "nodes"
    node = app[SETTINGS].node_id
    while True:
        with contextlib.suppress(RedisError, OSError):
            await app[REDIS].hset(key, node, orjson.dumps(_stats(app)))
        await asyncio.sleep(1)
