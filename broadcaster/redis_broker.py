"""The Redis broker: one pub/sub connection per node, owned reconnect loop."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .broker import BrokerUnavailable, Deliver
from .message import Message, unpack
from .publisher import RedisPublisher

log = logging.getLogger(__name__)

# Failures that end a pub/sub session or a publish (redis-py wraps socket errors in
# RedisError subclasses; OSError covers the rest); anything else is a bug and propagates.
LINK_ERRORS = (RedisError, OSError)
_SUBSCRIBE, _UNSUBSCRIBE, _PING = b"SUBSCRIBE", b"UNSUBSCRIBE", b"PING"


class RedisBroker:
    """Subscribes this node's channels on one Redis connection and publishes through a pool."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "sse:",
        ping_interval: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._publisher = RedisPublisher(client, prefix=prefix)
        self._ping_interval = ping_interval
        self._max_backoff = max_backoff
        self._deliver: Deliver | None = None
        self._desired: set[str] = set()
        # Commands for the live connection, sent in call order by one writer.
        self._commands: deque[tuple[bytes, str, asyncio.Future[None] | None]] = deque()
        self._wake = asyncio.Event()
        # Per channel, one entry per SUBSCRIBE sent and not yet acknowledged.
        self._acks: dict[str, deque[asyncio.Future[None] | None]] = {}
        self._live = False
        self._connected = False
        self._first_attempt: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "sse:") -> RedisBroker:
        """A broker for the Redis server at `url`."""
        return cls(redis.Redis.from_url(url, socket_connect_timeout=5), prefix=prefix)

    @property
    def connected(self) -> bool:
        """Whether the pub/sub connection is up and subscribed."""
        return self._connected

    async def start(self, deliver: Deliver) -> None:
        """Start the connection loop; returns after the first attempt, successful or not."""
        self._deliver = deliver
        self._first_attempt = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name="redis-pubsub")
        await asyncio.wait([self._first_attempt, self._task], return_when=asyncio.FIRST_COMPLETED)

    async def close(self) -> None:
        """Stop the loop and close every connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._release_waiters()
        await self._client.aclose()

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """Subscribe `channel`; resolves when Redis confirms, or at once while disconnected."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._desired.add(channel)
        if self._live:
            self._send(_SUBSCRIBE, channel, done)
        else:
            # Not connected: the channel is subscribed with all the others on reconnect.
            done.set_result(None)
        return done

    def unsubscribe(self, channel: str) -> None:
        """Unsubscribe `channel`."""
        self._desired.discard(channel)
        if self._live:
            self._send(_UNSUBSCRIBE, channel, None)

    async def publish(self, channel: str, message: Message) -> Message:
        """Publish to every node subscribed to `channel`."""
        try:
            return await self._publisher.send(channel, message)
        except LINK_ERRORS as exc:
            raise BrokerUnavailable(f"redis unavailable: {exc}") from exc

    def _send(self, verb: bytes, channel: str, done: asyncio.Future[None] | None) -> None:
        self._commands.append((verb, channel, done))
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.05
        outage_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            conn = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            conn.retry = Retry(NoBackoff(), 0)  # this loop owns retries and backoff
            try:
                await conn.connect()
                if outage_since is not None:
                    log.info("redis reconnected after %.1fs", loop.time() - outage_since)
                    outage_since = None
                backoff = 0.05
                await self._session(conn)
            except* LINK_ERRORS as group:
                self._lost()
                if outage_since is None:
                    outage_since = loop.time()
                    log.warning("redis unavailable, retrying with backoff: %s", group.exceptions[0])
            finally:
                await conn.disconnect()
            if self._first_attempt is not None and not self._first_attempt.done():
                self._first_attempt.set_result(None)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._max_backoff)

    async def _session(self, conn: AbstractConnection) -> None:
        # One synchronous step: from here on, subscribe/unsubscribe calls queue behind
        # a SUBSCRIBE of every channel that has local clients, so none is missed.
        self._commands = deque((_SUBSCRIBE, ch, None) for ch in sorted(self._desired))
        self._acks = {}
        self._live = True
        self._wake.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._write_loop(conn))
            tasks.create_task(self._read_loop(conn))

    async def _write_loop(self, conn: AbstractConnection) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._commands:
                verb, channel, done = self._commands.popleft()
                if not conn.is_connected:
                    raise RedisConnectionError("pub/sub connection closed")
                if verb == _SUBSCRIBE:
                    self._acks.setdefault(channel, deque()).append(done)
                args = (verb,) if verb == _PING else (verb, self._prefix + channel)
                await conn.send_command(*args, check_health=False)
            if not self._connected:
                # The first batch (the resubscription) is on the wire: the node is ready.
                self._connected = True
                if self._first_attempt is not None and not self._first_attempt.done():
                    self._first_attempt.set_result(None)

    async def _read_loop(self, conn: AbstractConnection) -> None:
        unanswered = 0
        prefix = len(self._prefix)
        while True:
            try:
                reply = await conn.read_response(timeout=self._ping_interval, push_request=True)
            except RedisTimeoutError:
                reply = None
            if reply is None:
                # Silence: prove the link is alive, or give up on it after two missed PINGs.
                unanswered += 1
                if unanswered > 2:
                    raise RedisTimeoutError("redis did not answer PING")
                self._send(_PING, "", None)
                continue
            unanswered = 0
            if not isinstance(reply, list) or len(reply) < 3:
                continue  # PONG outside subscribed mode
            kind = reply[0]
            if kind == b"message":
                self._on_message(reply[1][prefix:].decode("utf-8", "replace"), reply[2])
            elif kind == b"subscribe":
                pending = self._acks.get(reply[1][prefix:].decode("utf-8", "replace"))
                if pending:
                    done = pending.popleft()
                    if done is not None and not done.done():
                        done.set_result(None)

    def _on_message(self, channel: str, payload: bytes) -> None:
        try:
            message = unpack(payload)
        except ValueError as exc:
            log.warning("dropped a malformed message on %r: %s", channel, exc)
            return
        if self._deliver is not None:
            self._deliver(channel, message)

    def _lost(self) -> None:
        self._live = False
        self._connected = False
        self._release_waiters()
        self._commands.clear()

    def _release_waiters(self) -> None:
        # Waiting clients proceed; their channels are resubscribed on reconnect.
        for pending in self._acks.values():
            for done in pending:
                if done is not None and not done.done():
                    done.set_result(None)
        self._acks = {}
        for _, _, done in self._commands:
            if done is not None and not done.done():
                done.set_result(None)
