"""The Redis broker: one pub/sub connection per node, gap-free delivery, owned reconnects.

The broker session: connect, load the function library, open the link with every
wanted channel, backfill what the last connection missed; on any failure, back off and
start again. The link (`link.py`), history reads (`history.py`), shared replays
(`replays.py`), reports of what was delivered (`reports.py`) and the function library
(`library.py`) are each a module of their own.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from broadcaster.brokers.config import DEFAULT_CONFIG, LibraryConfig
from broadcaster.brokers.protocol import BrokerUnavailable, Deliver
from broadcaster.brokers.redis.client import IN_FLIGHT, LINK_ERRORS, connect
from broadcaster.brokers.redis.history import RedisHistory
from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.brokers.redis.library import Library, NotReplicated, missing
from broadcaster.brokers.redis.link import PubSubLink
from broadcaster.brokers.redis.payloads import received
from broadcaster.brokers.redis.publishing import publish
from broadcaster.brokers.redis.replays import SharedReplays
from broadcaster.brokers.redis.reports import SeenReports
from broadcaster.brokers.redis.sequencer import Sequencer
from broadcaster.core.history import Start, begin
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.metrics import Counts
from broadcaster.core.publication import Publication
from broadcaster.core.replay import Replay

log = logging.getLogger(__name__)


class RedisBroker:
    """Subscribes this node's channels on one Redis connection and publishes through a pool.

    Durable messages reach the hub in id order without gaps (see `Sequencer`); after a
    reconnect, every channel is backfilled from the last id it delivered.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        config: LibraryConfig = DEFAULT_CONFIG,
        max_replay_bytes: int = 4 * 1_048_576,
        ping_interval: float = 5.0,
        max_backoff: float = 5.0,
        counts: Counts | None = None,
    ) -> None:
        self._counts = counts or Counts()
        self._client = client
        self._library = Library(config)
        prefix = config.prefix
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)
        self._history = RedisHistory(
            lambda _: client,
            keys=KeySpace(prefix),
            ttl=config.history_ttl,
            max_replay_bytes=max_replay_bytes,
            in_flight=self._in_flight,
        )
        self._max_backoff = max_backoff
        self._deliver: Deliver | None = None
        self._desired: set[str] = set()
        self._link = PubSubLink(
            prefix,
            ping_interval=ping_interval,
            on_message=self._on_message,
            on_subscribed=self._on_subscribed,
        )
        self._sequencer = Sequencer(
            self._history,
            self._emit,
            self._link.fence,
            retry_errors=LINK_ERRORS,
            rejected=self._forged,
        )
        self._replays = SharedReplays(self._read_replay)
        self._library_refused = False
        self._closing = False
        self._connected = False
        self._first_attempt: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._replid: str | None = None  # the primary's replication history, once known
        self._reports = SeenReports(self._library, client, max_backoff=max_backoff)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        config: LibraryConfig = DEFAULT_CONFIG,
        max_replay_bytes: int = 4 * 1_048_576,
        counts: Counts | None = None,
    ) -> RedisBroker:
        """A broker for the Redis server at `url` (options as for the constructor)."""
        return cls(connect(url), config=config, max_replay_bytes=max_replay_bytes, counts=counts)

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
        await self._reports.close()
        self._link.close()
        await self._client.aclose()

    def group(self, channel: str) -> str:
        """Every channel is in one group: one sequence."""
        return ""

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """Subscribe `channel`; resolves when Redis confirms, or at once while disconnected."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._desired.add(channel)
        if self._link.live:
            self._link.subscribe(channel, done)
            # Confirmed, or answered by the connection's loss: either way its streams go
            # live now, and the channel needs a position for the next backfill to start.
            done.add_done_callback(lambda _: self._started(channel))
        else:
            # Not connected: the channel is subscribed with all the others on reconnect,
            # and backfilled from what the node knows now.
            self._sequencer.started(channel)
            done.set_result(None)
        return done

    def unsubscribe(self, channel: str) -> None:
        """Unsubscribe `channel`."""
        self._desired.discard(channel)
        self._sequencer.forget(channel)
        if self._link.live:
            self._link.unsubscribe(channel)

    async def publish(self, batch: Sequence[Publication]) -> list[str]:
        """Publish durably (`FCALL sse_publish`, one pipeline) to every subscribed node."""
        return await publish(self._library, self._client, self._in_flight, batch)

    async def closed(self, channels: Sequence[str]) -> dict[str, EventId]:
        """Which of `channels` are closed now, each with its closing message's id."""
        return await self._history.closed(channels)

    async def replay(self, channels: Sequence[str], start: Start) -> Replay:
        """What `channels` replay from `start`, read atomically from their streams (a read
        shared with the clients asking the same at the same moment)."""
        return await self._replays.replay(channels, start)

    async def _read_replay(self, channels: list[str], start: Start) -> Replay:
        try:
            try:
                snapshot = await self._history.snapshot(channels, start)
            except ResponseError as exc:
                if not missing(exc):
                    raise
                await self._load_library()  # this Redis lost it (a restart without data)
                snapshot = await self._history.snapshot(channels, start)
            result = begin(start, snapshot)
            # Once the PONG is back, every live message published before the read has
            # passed the reader: none can reach the client again after its replay, unless
            # the sequencer holds it (a backfill is under way, whose drain may deliver
            # what the replay had). With the link down (a failover: history answers before
            # pub/sub is back), they may still come, from the next session's backfill.
            fenced = self._link.live and await self._link.fence()
            result.caught_up = fenced and not self._sequencer.holding
        except LINK_ERRORS as exc:
            raise BrokerUnavailable(f"redis unavailable: {exc}") from exc
        if result.head is not None:
            local = [c for c in channels if c in self._desired]
            self._sequencer.replayed(local, result.head, caught_up=result.caught_up)
        return result

    async def _run(self) -> None:
        backoff = 0.05
        outage_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            conn = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            conn.retry = Retry(NoBackoff(), 0)  # this loop owns retries and backoff
            try:
                await conn.connect()
                self._note_primary(await _replication_id(conn))
                await self._load_library()
                if self._sequencer.seen is not None:
                    await self._reports.report(str(self._sequencer.seen))
                head = await self._history.head()
                if outage_since is not None:
                    log.info("redis reconnected after %.1fs", loop.time() - outage_since)
                    self._counts.redis_reconnects += 1
                    outage_since = None
                backoff = 0.05
                await self._session(conn, head)
            except LINK_ERRORS as exc:
                self._lost()
                if outage_since is None:
                    outage_since = loop.time()
                    log.warning("redis unavailable, retrying with backoff: %s", exc)
            except Exception:
                # A bug, not an outage: say so loudly, but never leave the node without
                # its pub/sub connection.
                self._lost()
                log.exception("pub/sub session failed; reconnecting")
                outage_since = outage_since or loop.time()
            finally:
                await conn.disconnect(nowait=True)
            if self._closing:
                raise asyncio.CancelledError
            if self._first_attempt is not None and not self._first_attempt.done():
                self._first_attempt.set_result(None)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._max_backoff)

    async def _session(self, conn: AbstractConnection, head: EventId | None) -> None:
        sequencer = self._sequencer
        # One synchronous step: from here on, subscribe/unsubscribe calls queue behind a
        # SUBSCRIBE of every channel that has local clients, so none is missed; they are
        # held until backfilled from where they stopped (or, for those that never had a
        # position, from what the node knew before this session).
        self._link.open(self._desired)
        resync = sequencer.hold(self._desired)
        sequencer.note_head(head)
        if resync:
            # The PONG comes back once every SUBSCRIBE above is in effect.
            resubscribed = self._link.fence()
            resubscribed.add_done_callback(lambda _: sequencer.backfill(resync))
        try:
            await self._link.run(conn, self._ready)
        finally:
            sequencer.cancel()

    def _note_primary(self, replid: str) -> None:
        # A promoted replica, a primary restarted without its data, or another server
        # behind the same address: a new replication history. The session that follows
        # backfills as after any reconnect, before it delivers anything newer.
        if self._replid is not None and replid != self._replid:
            self._counts.redis_failovers += 1
            log.warning("redis primary changed (replication id %s, was %s)", replid, self._replid)
        self._replid = replid

    def _ready(self) -> None:
        # The resubscription is on the wire: the node is ready.
        self._connected = True
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)

    async def _load_library(self) -> None:
        try:
            await self._library.load(self._client, replace=True)
        except NotReplicated as exc:
            # A primary waiting for replicas (`min-replicas-to-write`) has the library
            # from replication; the next session loads it again.
            log.warning("cannot load the function library now: %s", exc)
        except ResponseError as exc:
            if not self._library_refused:
                # Redis before 7 has no FUNCTION: live delivery works, durable publish not.
                self._library_refused = True
                log.error("cannot load the sse_publish function (Redis 7+ needed): %s", exc)

    def _on_subscribed(self, channel: str) -> None:
        self._sequencer.started(channel)

    def _started(self, channel: str) -> None:
        if channel in self._desired:  # (not left meanwhile)
            self._sequencer.started(channel)

    def _on_message(self, channel: str, payload: bytes, durable: bool) -> None:
        if channel in self._desired:
            message = received(channel, payload, durable, self._counts.malformed)
            if message is not None:
                self._sequencer.receive(channel, message)

    def _forged(self, channel: str, message: Message) -> None:
        self._counts.malformed["forged"] += 1

    def _emit(self, channel: str, message: Message) -> None:
        if self._deliver is not None:
            self._deliver(channel, message)

    def _lost(self) -> None:
        self._connected = False
        self._link.close()


async def _replication_id(conn: AbstractConnection) -> str:
    """The replication id of the server behind `conn` (it changes on promotion); empty
    where the server does not say (a Redis-compatible server without INFO)."""
    await conn.send_command("INFO", "replication", check_health=False)
    try:
        info = await conn.read_response()
    except ResponseError:
        return ""
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("master_replid:"):
            return line.partition(":")[2].strip()
    return ""
