"""The demo's endpoints: the chat page (/), the dashboard (/dashboard), POST /demo/ask
and /cluster. With BROADCASTER_DEMO=off, only a 403 for /demo/ask is left."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.exceptions import RedisError

from broadcaster.brokers.redis.client import connect_publisher
from broadcaster.brokers.redis.library import AsyncClient
from broadcaster.client.broker_publisher import BrokerPublisher
from broadcaster.core.channels import check_channel
from broadcaster.demo import stats
from broadcaster.demo.answer import stream_answer
from broadcaster.demo.queue import JobQueue, QueueFull
from broadcaster.demo.settings import DemoSettings
from broadcaster.node.auth import reaches, require
from broadcaster.node.bodies import read_body
from broadcaster.node.limits import RateLimiter, client_ip
from broadcaster.node.process.app import Part
from broadcaster.node.replies import Refused, error, invalid_reason
from broadcaster.node.state import AUTH, BROKER, HUB, METRICS, SETTINGS, TRUSTED_PROXIES

MAX_QUESTION_BYTES = 4096


@dataclass(slots=True)
class Demo:
    """What the demo keeps on a node: its rate limit, its answers or its queue."""

    asks: RateLimiter
    answers: set[asyncio.Task[None]] = field(default_factory=set)  # answered on this node
    redis: AsyncClient | None = None
    queue: JobQueue | None = None  # set when a producer answers (`broadcaster demo`)


DEMO = web.AppKey("demo", Demo)
DEMO_SETTINGS = web.AppKey("demo_settings", DemoSettings)
routes = web.RouteTableDef()


def part(settings: DemoSettings) -> Part:
    """The demo as a part of a node (picklable, for worker processes)."""
    return functools.partial(install, settings=settings)


def install(app: web.Application, settings: DemoSettings) -> None:
    """Serve the demo as BROADCASTER_DEMO says; `off` leaves only a 403 for /demo/ask."""
    if settings.demo == "off":
        app.router.add_post("/demo/ask", _off)
        return
    app[DEMO_SETTINGS] = settings
    app.add_routes(routes)
    app.cleanup_ctx.append(_lifecycle)


async def _off(request: web.Request) -> web.Response:
    return error(403, "the demo is off on this node (BROADCASTER_DEMO=off)")


def _page(name: str, settings: DemoSettings) -> web.Response:
    body = resources.files(__package__).joinpath("static", name).read_text()
    # The prefix is plain ASCII from a strict charset (settings), safe inside HTML.
    body = body.replace("{{DEMO_PREFIX}}", settings.demo_prefix)
    return web.Response(text=body, content_type="text/html")


@routes.get("/")
async def chat_page(request: web.Request) -> web.Response:
    """The streaming chat demo."""
    return _page("index.html", request.app[DEMO_SETTINGS])


@routes.get("/dashboard")
async def dashboard_page(request: web.Request) -> web.Response:
    """A live view of the cluster."""
    return _page("dashboard.html", request.app[DEMO_SETTINGS])


class Question(BaseModel):
    """The body of POST /demo/ask."""

    model_config = ConfigDict(extra="forbid")

    channel: str
    prompt: str = Field(max_length=500)

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        return check_channel(value)


@routes.post("/demo/ask")
async def ask(request: web.Request) -> web.Response:
    """Start a simulated answer on the asker's channel, here or through the queue.

    Only channels under DEMO_PREFIX; with authentication configured, only with the
    same right POST /publish needs on that channel; at most DEMO_ASKS_PER_MINUTE per
    client address; at most DEMO_QUEUE_MAX waiting or being answered.
    """
    try:
        question = await _admit(request)
        producer = await _start(request.app, question)
    except Refused as refused:
        return refused.response()
    return web.json_response({"channel": question.channel, "producer": producer}, status=202)


async def _admit(request: web.Request) -> Question:
    """The question, if this asker may ask it now; raises Refused if not. What needs no
    body is checked before the body is read: a refused asker sends none for nothing."""
    app, settings = request.app, request.app[DEMO_SETTINGS]
    auth = app[AUTH]
    allowed = auth.publish_patterns(request) if auth.publishing_protected else ("*",)
    prefix = settings.demo_prefix
    if not any(reaches(pattern, prefix) for pattern in allowed):
        raise Refused(403, f"token does not allow publish on any channel starting with {prefix!r}")
    wait = app[DEMO].asks.hit(client_ip(request, app[TRUSTED_PROXIES]))
    if wait is not None:
        retry = {"Retry-After": str(max(1, round(wait)))}
        raise Refused(429, "too many questions from this address", **retry)
    body = await read_body(
        request, MAX_QUESTION_BYTES, f"a question is at most {MAX_QUESTION_BYTES} bytes"
    )
    try:
        question = Question.model_validate(orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"body is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise Refused(400, invalid_reason(exc)) from None
    if not question.channel.startswith(prefix):
        raise Refused(403, f"the demo answers only on channels starting with {prefix!r}")
    require(allowed, [question.channel], "publish")
    return question


async def _start(app: web.Application, question: Question) -> str:
    """Queue the question for a producer, or answer it here; who answers."""
    demo, settings = app[DEMO], app[DEMO_SETTINGS]
    if demo.queue is not None:
        try:
            await demo.queue.push(question.channel, question.prompt)
        except QueueFull as exc:
            raise Refused(503, str(exc), **{"Retry-After": "5"}) from None
        except (RedisError, OSError) as exc:
            raise Refused(503, f"redis unavailable: {exc}", **{"Retry-After": "1"}) from None
        return "queue"
    if len(demo.answers) >= settings.demo_queue_max:
        busy = f"this node is answering {len(demo.answers)} questions already"
        raise Refused(503, busy, **{"Retry-After": "5"})
    task = asyncio.create_task(
        stream_answer(
            BrokerPublisher(app[BROKER]),
            question.channel,
            question.prompt,
            settings.demo_token_delay,
        )
    )
    demo.answers.add(task)
    task.add_done_callback(demo.answers.discard)
    return app[SETTINGS].node_id


def _own_stats(app: web.Application) -> stats.Stats:
    return {
        "node": app[SETTINGS].node_id,
        "connections": app[HUB].stream_count,
        "events_sent": app[METRICS].counts.events_sent,
        "time": time.time(),
    }


@routes.get("/cluster")
async def cluster(request: web.Request) -> web.Response:
    """Every live node's counters (from Redis), or just this node's without Redis."""
    app = request.app
    own = _own_stats(app)
    client = app[DEMO].redis
    nodes = (
        [own] if client is None else await stats.cluster(client, app[SETTINGS].channel_prefix, own)
    )
    return web.json_response({"nodes": nodes}, dumps=lambda v: orjson.dumps(v).decode())


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """With Redis: a client for the queue, and a task reporting this node's counters."""
    settings, own = app[SETTINGS], app[DEMO_SETTINGS]
    app[DEMO] = demo = Demo(RateLimiter(own.demo_asks_per_minute))
    reporter = None
    if settings.redis_url is not None:
        demo.redis = connect_publisher(settings.redis_url)
        if own.demo != "on":  # a producer answers (`broadcaster demo`)
            demo.queue = JobQueue(
                demo.redis, settings.channel_prefix, own.demo_queue_max, own.demo_job_ttl
            )
        reporter = asyncio.create_task(
            stats.report_forever(demo.redis, settings.channel_prefix, lambda: _own_stats(app)),
            name="node-stats",
        )
    yield
    for task in [*demo.answers, *([reporter] if reporter else [])]:
        task.cancel()
    if demo.redis is not None:
        with contextlib.suppress(RedisError, OSError):
            await demo.redis.aclose()
