"""The Redis list of questions waiting for a demo producer: bounded, and every job expires."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import orjson

from broadcaster.brokers.redis.library import AsyncClient
from broadcaster.core.channels import check_channel

# One step, so concurrent asks cannot push the list past its bound. The list itself
# expires a job's lifetime after the last push: with no producer, it empties by itself.
_PUSH = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class QueueFull(Exception):
    """The queue holds its maximum of questions already."""


@dataclass(frozen=True, slots=True)
class Job:
    """A queued question: where to answer it, and until when it is worth answering."""

    channel: str
    prompt: str
    expires: float  # Unix time

    def expired(self) -> bool:
        """Whether the asker has waited too long for an answer to still be useful."""
        return time.time() > self.expires

    def encode(self) -> bytes:
        """The job as stored in Redis."""
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str) -> Job:
        """A job read from Redis; raises ValueError when it is not one."""
        try:
            fields = orjson.loads(raw)
            job = cls(str(fields["channel"]), str(fields["prompt"]), float(fields["expires"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a demo job: {exc}") from None
        check_channel(job.channel)
        return job


class JobQueue:
    """Questions in a Redis list: at most `max_length`, each answerable for `ttl` seconds."""

    def __init__(self, client: AsyncClient, prefix: str, max_length: int, ttl: float) -> None:
        self.key = f"{prefix}demo:jobs"
        self._client = client
        self._max_length = max_length
        self._ttl = ttl
        self._push = client.register_script(_PUSH)

    async def push(self, channel: str, prompt: str) -> None:
        """Queue a question; raises QueueFull, or RedisError when Redis is out of reach."""
        job = Job(channel, prompt, time.time() + self._ttl)
        ttl_ms = max(1, round(self._ttl * 1000))
        if not await self._push(keys=[self.key], args=[job.encode(), self._max_length, ttl_ms]):
            raise QueueFull(f"the demo queue holds {self._max_length} questions already")

    async def pop(self, timeout: float) -> Job | None:
        """Take the oldest job, waiting up to `timeout` seconds; None if none came.

        Raises ValueError for an entry that is not a job (it is gone from the queue).
        """
        popped = await self._client.blpop([self.key], timeout=timeout)
        return None if popped is None else Job.decode(popped[1])
