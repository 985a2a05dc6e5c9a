"""`broadcaster demo`: the producer that answers a cluster's queued questions.

It runs outside the nodes, so killing the node that serves a page never stops the answer.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from broadcaster.brokers.redis.client import connect_publisher
from broadcaster.client import RedisPublisher
from broadcaster.demo.answer import stream_answer
from broadcaster.demo.queue import Job, JobQueue
from broadcaster.demo.settings import DemoSettings
from broadcaster.node.settings import NodeSettings

log = logging.getLogger(__name__)


async def run_producer(node: NodeSettings, settings: DemoSettings, redis_url: str) -> None:
    """Answer queued questions until cancelled, at most DEMO_QUEUE_MAX at a time; `node`
    is the cluster's settings (its prefix and library config)."""
    client = connect_publisher(redis_url)
    queue = JobQueue(client, node.channel_prefix, settings.demo_queue_max, settings.demo_job_ttl)
    publisher = RedisPublisher(client, config=node.library_config())
    slots = asyncio.Semaphore(settings.demo_queue_max)
    running: set[asyncio.Task[None]] = set()

    def finished(task: asyncio.Task[None]) -> None:
        running.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.warning("an answer stopped: %s", task.exception())

    log.info("demo producer waiting for questions on %s", queue.key)
    try:
        while True:
            await slots.acquire()
            job = await _next_job(queue, settings.demo_prefix)
            if job is None:
                slots.release()
                continue
            task = asyncio.create_task(
                stream_answer(publisher, job.channel, job.prompt, settings.demo_token_delay)
            )
            running.add(task)
            task.add_done_callback(finished)
    finally:
        for task in running:
            task.cancel()
        await client.aclose()


async def _next_job(queue: JobQueue, demo_prefix: str) -> Job | None:
    """The next question worth answering; None when none came or it was dropped."""
    try:
        job = await queue.pop(timeout=5)
    except ValueError as exc:
        log.warning("dropped a queue entry: %s", exc)
        return None
    except (RedisError, OSError) as exc:
        log.warning("cannot read the queue (retrying in 1 s): %s", exc)
        await asyncio.sleep(1)
        return None
    if job is None:
        return None
    if job.expired():
        log.warning("dropped an expired question for %r", job.channel)
        return None
    if not job.channel.startswith(demo_prefix):
        log.warning(
            "dropped a question for %r: outside the demo prefix %r", job.channel, demo_prefix
        )
        return None
    return job
