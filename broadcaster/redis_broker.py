"""The Redis broker: one pub/sub connection per node, gap-free delivery, owned reconnects."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Sequence

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .broker import BrokerUnavailable, Deliver
from .history import EventId, Replay, Start, begin
from .library import Library
from .message import Message, unpack
from .metrics import Counts
from .publication import Publication
from .redis_client import connect
from .redis_history import RedisHistory
from .sequencer import Sequencer

log = logging.getLogger(__name__)
Flight = tuple[tuple[str, ...], Start]  # one shared history read: channels and start

# Failures that end a pub/sub session or a publish (redis-py wraps socket errors in
# RedisError subclasses; OSError covers the rest); anything else is a bug and propagates.
LINK_ERRORS = (RedisError, OSError)
_SUBSCRIBE, _UNSUBSCRIBE, _PING = b"SUBSCRIBE", b"UNSUBSCRIBE", b"PING"
# How long a history read waits for more clients asking for the same range.
REPLAY_GATHER_SECONDS = 0.002


class RedisBroker:
    """Subscribes this node's channels on one Redis connection and publishes through a pool.

    Durable messages reach the hub in id order without gaps (see `Sequencer`); after a
    reconnect, every channel is backfilled from the last id it delivered.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "sse:",
        history_maxlen: int = 1000,
        history_ttl: int = 86400,
        idempotency_window: float = 300,
        ping_interval: float = 5.0,
        max_backoff: float = 5.0,
        counts: Counts | None = None,
    ) -> None:
        self._counts = counts or Counts()
        self._client = client
        self._prefix = prefix
        self._library = Library(prefix, history_maxlen, history_ttl, idempotency_window)
        self._history = RedisHistory(client, prefix=prefix, ttl=history_ttl)
        self._ping_interval = ping_interval
        self._max_backoff = max_backoff
        self._deliver: Deliver | None = None
        self._desired: set[str] = set()
        # Commands for the live connection, sent in call order by one writer.
        self._commands: deque[tuple[bytes, str, asyncio.Future[None] | None]] = deque()
        self._wake = asyncio.Event()
        # Per channel, one entry per SUBSCRIBE sent and not yet acknowledged; likewise PINGs.
        self._acks: dict[str, deque[asyncio.Future[None] | None]] = {}
        self._pongs: deque[asyncio.Future[None] | None] = deque()
        self._sequencer = Sequencer(
            self._history, self._emit, self._barrier, retry_errors=LINK_ERRORS
        )
        self._flights: dict[Flight, asyncio.Future[Replay]] = {}
        self._flying: set[asyncio.Task[None]] = set()
        self._library_refused = False
        self._closing = False
        self._live = False
        self._connected = False
        self._first_attempt: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "sse:",
        history_maxlen: int = 1000,
        history_ttl: int = 86400,
        idempotency_window: float = 300,
        counts: Counts | None = None,
    ) -> RedisBroker:
        """A broker for the Redis server at `url`."""
        return cls(
            connect(url),
            prefix=prefix,
            history_maxlen=history_maxlen,
            history_ttl=history_ttl,
            idempotency_window=idempotency_window,
            counts=counts,
        )

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
        self._closing = True
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
        self._sequencer.forget(channel)
        if self._live:
            self._send(_UNSUBSCRIBE, channel, None)

    async def publish(self, batch: Sequence[Publication]) -> list[str]:
        """Publish durably (`FCALL sse_publish`, one pipeline) to every subscribed node."""
        try:
            return await self._library.publish(self._client, batch)
        except LINK_ERRORS as exc:
            raise BrokerUnavailable(f"redis unavailable: {exc}") from exc

    async def replay(self, channels: Sequence[str], start: Start) -> Replay:
        """What `channels` replay from `start`, read atomically from their streams.

        In a reconnect storm many clients ask for the same range: requests that arrive
        before a read goes out share it. None joins a read already sent, because each
        requester must be subscribed before the read it relies on.
        """
        key = (tuple(channels), start)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().create_future()
            self._flights[key] = flight
            task = asyncio.create_task(self._fly(key, flight))
            self._flying.add(task)
            task.add_done_callback(self._flying.discard)
        return await asyncio.shield(flight)

    async def _fly(
        self, key: tuple[tuple[str, ...], Start], flight: asyncio.Future[Replay]
    ) -> None:
        await asyncio.sleep(REPLAY_GATHER_SECONDS)
        del self._flights[key]  # from now on, newcomers start their own read
        try:
            flight.set_result(await self._read_replay(list(key[0]), key[1]))
        except BrokerUnavailable as exc:
            flight.set_exception(exc)

    async def _read_replay(self, channels: list[str], start: Start) -> Replay:
        try:
            result = begin(start, await self._history.snapshot(channels, start))
            if self._live:
                # Once the PONG is back, every live message published before the read has
                # passed the reader: none can reach the client again after its replay.
                await self._barrier()
        except LINK_ERRORS as exc:
            raise BrokerUnavailable(f"redis unavailable: {exc}") from exc
        if result.head is not None:
            self._sequencer.replayed([c for c in channels if c in self._desired], result.head)
        return result

    def _barrier(self) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._send(_PING, "", done)
        return done

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
                await self._load_library()
                head = await self._history.head()
                if outage_since is not None:
                    log.info("redis reconnected after %.1fs", loop.time() - outage_since)
                    self._counts.redis_reconnects += 1
                    outage_since = None
                backoff = 0.05
                await self._session(conn, head)
            except* LINK_ERRORS as group:
                self._lost()
                if outage_since is None:
                    outage_since = loop.time()
                    log.warning("redis unavailable, retrying with backoff: %s", group.exceptions[0])
            except* Exception as group:
                # A bug, not an outage: say so loudly, but never leave the node without
                # its pub/sub connection.
                self._lost()
                log.error("pub/sub session failed; reconnecting", exc_info=group)
                outage_since = outage_since or loop.time()
            finally:
                await conn.disconnect()
            if self._closing:
                # Python 3.11's TaskGroup can raise a child's link error in place of the
                # cancellation close() sent; never let that keep a closing broker going.
                raise asyncio.CancelledError
            if self._first_attempt is not None and not self._first_attempt.done():
                self._first_attempt.set_result(None)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._max_backoff)

    async def _load_library(self) -> None:
        try:
            await self._library.load(self._client, replace=True)
        except ResponseError as exc:
            # Redis before 7 has no FUNCTION: live delivery still works, durable publish not.
            if not self._library_refused:
                self._library_refused = True
                log.error("cannot load the sse_publish function (Redis 7+ needed): %s", exc)

    async def _session(self, conn: AbstractConnection, head: EventId | None) -> None:
        sequencer = self._sequencer
        if head is not None and (sequencer.seen is None or head > sequencer.seen):
            sequencer.seen = head
        # One synchronous step: from here on, subscribe/unsubscribe calls queue behind a
        # SUBSCRIBE of every channel that has local clients, so none is missed; channels
        # delivered before are held until backfilled from where they stopped.
        self._commands = deque((_SUBSCRIBE, ch, None) for ch in sorted(self._desired))
        self._acks, self._pongs = {}, deque()
        resync = sequencer.hold(self._desired)
        self._live = True
        if resync:
            # The PONG comes back once every SUBSCRIBE above is in effect.
            resubscribed = self._barrier()
            resubscribed.add_done_callback(lambda _: sequencer.backfill(resync))
        self._wake.set()
        # Not a TaskGroup: it ignores a child that ends cancelled, and Python 3.11's
        # asyncio.timeout (inside redis-py's reads) can leave a stray cancellation that
        # ends the reader so. The session would then wait on the writer forever, with
        # its connection closed. Here the end of either loop, however it ends, ends it.
        loops = [
            asyncio.create_task(self._write_loop(conn), name="pubsub-writer"),
            asyncio.create_task(self._read_loop(conn), name="pubsub-reader"),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.wait(loops)
            # Each loop's own error, once it was cancelled too, is the link's end: seen here.
            failures = [None if task.cancelled() else task.exception() for task in loops]
            sequencer.cancel()
        ended = done.pop()
        raise failures[loops.index(ended)] or RedisConnectionError(f"{ended.get_name()} stopped")

    async def _write_loop(self, conn: AbstractConnection) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._commands:
                verb, channel, done = self._commands.popleft()
                if not conn.is_connected:
                    raise RedisConnectionError("pub/sub connection closed")
                if verb == _PING:
                    self._pongs.append(done)
                    await conn.send_command(verb, check_health=False)
                    continue
                if verb == _SUBSCRIBE:
                    self._acks.setdefault(channel, deque()).append(done)
                await conn.send_command(verb, self._prefix + channel, check_health=False)
            if not self._connected:
                # The resubscription is on the wire: the node is ready.
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
            kind = reply[0] if isinstance(reply, list) else reply
            if kind == b"message":
                self._on_message(reply[1][prefix:].decode("utf-8", "replace"), reply[2])
            elif kind == b"subscribe":
                self._on_subscribed(reply[1][prefix:].decode("utf-8", "replace"))
            elif kind in (b"pong", b"PONG") and self._pongs:
                _resolve(self._pongs.popleft())

    def _on_subscribed(self, channel: str) -> None:
        pending = self._acks.get(channel)
        if pending:
            _resolve(pending.popleft())
        self._sequencer.started(channel)

    def _on_message(self, channel: str, payload: bytes) -> None:
        try:
            message = unpack(payload, self._counts.malformed)
        except ValueError as exc:
            self._counts.malformed["envelope"] += 1
            log.warning("dropped a malformed message on %r: %s", channel, exc)
            return
        if channel in self._desired:
            self._sequencer.receive(channel, message)

    def _emit(self, channel: str, message: Message) -> None:
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
                _resolve(done)
        for done in self._pongs:
            _resolve(done)
        for _, _, done in self._commands:
            _resolve(done)
        self._acks, self._pongs = {}, deque()


def _resolve(done: asyncio.Future[None] | None) -> None:
    if done is not None and not done.done():
        done.set_result(None)
