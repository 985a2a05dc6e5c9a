"""The local hub: which streams follow which channels, fan-out, and the shared heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence

from broadcaster.brokers.protocol import Broker, BrokerUnavailable
from broadcaster.core.identity import Identity
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.metrics import Metrics
from broadcaster.core.positions import Positions
from broadcaster.core.sse import encode_retry, jittered_retry
from broadcaster.delivery.composite import Composite
from broadcaster.delivery.outbox import Fanout, Outbox
from broadcaster.delivery.roster import Roster
from broadcaster.delivery.stream import DisconnectReason, Stream

log = logging.getLogger(__name__)

MAX_TICK = 1.0  # seconds between checks of expiries (a max age, a token's exp) at most
EXPIRIES: tuple[DisconnectReason, ...] = ("max_age", "token_expired")


class Hub:
    """Keeps this node's subscriptions and hands each message to every local subscriber.

    Streams `open` here, `join` (subscribed, frames held for the replay), `go_live` once
    their preamble is out, and leave when their connection is gone. The hub's `outbox`
    writes what each loop turn delivered.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        heartbeat_interval: float,
        metrics: Metrics | None = None,
        retry_ms: int = 3000,
        max_age: float = 0,
    ) -> None:
        self._broker = broker
        self._retry_ms = retry_ms
        self._max_age = max_age
        self._metrics = metrics or Metrics()
        self._heartbeat_interval = heartbeat_interval
        self.outbox = Outbox(self._metrics.counts)
        self._channels: dict[str, Fanout[Stream]] = {}
        # The broker subscription of each channel: resolved once messages flow.
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._streams: set[Stream] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._heartbeat: asyncio.Task[None] | None = None
        # Reads a cancelled joiner handed on (see `_learn`).
        self._learning: set[asyncio.Task[None]] = set()
        self._stopping = False
        # Channels whose local count changed since `changed()` last took them, once a
        # presence tracker asked for them (`track_changes`).
        self._changed: set[str] | None = None
        self.roster = Roster()
        """The identified subscribers of each channel here (presence)."""

    @property
    def stream_count(self) -> int:
        """Open streams on this node."""
        return len(self._streams)

    @property
    def channel_count(self) -> int:
        """Channels with at least one local stream."""
        return len(self._channels)

    def local_count(self, channel: str) -> int:
        """Streams on this node that joined `channel` and have not left."""
        fanout = self._channels.get(channel)
        return 0 if fanout is None else len(fanout)

    def channels(self) -> list[str]:
        """Channels with at least one local stream."""
        return list(self._channels)

    def track_changes(self) -> None:
        """From now on, note each channel whose local count changes (see `changed`)."""
        if self._changed is None:
            self._changed = set()

    def changed(self) -> set[str]:
        """The channels whose local count changed since the last call, taken."""
        changed = self._changed
        if changed is None:
            return set()
        self._changed = set()
        return changed

    def start(self) -> None:
        """Start the heartbeat timer (one for all streams)."""
        self._heartbeat = asyncio.create_task(self._beat(), name="heartbeat")

    async def stop(self) -> None:
        """Stop the heartbeat timer (and reads of whether a channel is closed)."""
        self._stopping = True
        tasks = [*self._learning, *([self._heartbeat] if self._heartbeat else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def open(
        self,
        transport: asyncio.Transport,
        channels: Sequence[str],
        *,
        max_pending_bytes: int,
        release: Callable[[], None],
        token_expires: float = math.inf,
        identity: Identity | None = None,
    ) -> Stream:
        """A new stream of `channels` on `transport`, ending at the node's max age or at
        `token_expires` (seconds since the epoch), of a subscriber who is `identity` (None:
        anonymous). Once its connection is gone, it leaves the hub and calls `release`
        (its connection slot)."""
        loop = self.outbox.loop

        def ended(stream: Stream) -> None:
            self.leave(stream)
            release()

        groups = {channel: self._broker.group(channel) for channel in channels}
        return Stream(
            transport,
            self.outbox,
            channels,
            max_pending_bytes=max_pending_bytes,
            expires_at=self.expiry(),
            token_expires_at=loop.time() + (token_expires - time.time()),
            on_end=ended,
            composite=Composite.of(channels, groups),
            identity=identity,
        )

    async def join(self, stream: Stream) -> None:
        """Attach `stream` to its channels; returns once the broker delivers them all."""
        self._streams.add(stream)
        self._empty.clear()
        if stream.identity is not None:
            self.roster.arrive(stream.channels, stream.identity)
        waits = []
        learning = []
        for channel in stream.channels:
            fanout = self._channels.get(channel)
            if fanout is None:
                # First local subscriber: the refcount change and the broker call happen
                # in one step, so concurrent first and last subscribers cannot reorder.
                fanout = self._channels[channel] = Fanout[Stream]()
                subscribed = self._broker.subscribe(channel)
                ready = self._ready[channel] = self.outbox.loop.create_future()
                learning.append(self._learn(channel, fanout, subscribed, ready))
            elif not self._ready[channel].done():
                waits.append(self._ready[channel])
            if stream.composite is None:
                fanout.individual.add(stream)
            else:
                fanout.composed.add(stream)
            if self._changed is not None:
                self._changed.add(channel)
        # This joiner learns about the channels it subscribed (no task of their own: a
        # reconnect storm's first joiner is done in the same turn on the embedded broker,
        # and the others wait on nothing), then waits for those others subscribed.
        if len(learning) == 1:
            await learning[0]
        elif learning:
            await asyncio.gather(*learning)
        if waits:
            # asyncio.wait never cancels the shared futures when this joiner is cancelled.
            await asyncio.wait(waits)

    async def _learn(
        self,
        channel: str,
        fanout: Fanout[Stream],
        subscribed: asyncio.Future[None],
        ready: asyncio.Future[None],
    ) -> None:
        """Once `channel` is subscribed, learn whether it is closed, then resolve `ready`.
        Every message after the subscription comes live, so the first of them, if it came
        before the answer, tells instead; if the broker cannot tell, the first live
        message will. A joiner cancelled meanwhile (its client left) hands the rest to a
        task: the channel's other joiners wait for the answer too."""
        handed_on = False
        try:
            if not subscribed.done():
                await asyncio.wait([subscribed])  # (never cancels the broker's future)
            closed = await self._broker.closed([channel])
            if fanout.unheard:
                fanout.unheard = False
                fanout.ended = closed.get(channel)
        except BrokerUnavailable as exc:
            log.warning("cannot tell whether %r is closed, its next message will: %s", channel, exc)
        except asyncio.CancelledError:
            if not self._stopping:
                rest = asyncio.get_running_loop().create_task(
                    self._learn(channel, fanout, subscribed, ready)
                )
                self._learning.add(rest)
                rest.add_done_callback(self._learning.discard)
                handed_on = True
            raise
        finally:
            if not handed_on and not ready.done():
                ready.set_result(None)

    def finished(self, stream: Stream) -> bool:
        """Whether every channel of `stream` is closed: it has nothing more to wait for."""
        for channel in stream.channels:
            fanout = self._channels.get(channel)
            if fanout is None or fanout.ended is None:
                return False
        return True

    def go_live(
        self,
        stream: Stream,
        *,
        chunked: bool,
        replayed_through: EventId | None = None,
        caught_up: bool = True,
        positions: Positions | None = None,
    ) -> None:
        """The stream's headers and replay are out: it takes live frames from now on, as
        bytes shared with the channel's other streams when it follows only one (and its
        replay was `caught_up`: else it drops, by id, frames its replay already had).
        A stream of several groups starts at `positions`."""
        stream.start(chunked=chunked, replayed_through=replayed_through)
        if positions is not None:
            stream.begin(positions)
        if self.finished(stream):
            stream.close("closed")  # (what it has waiting goes first)
            return
        if len(stream.channels) == 1 and caught_up:
            fanout = self._channels.get(stream.channels[0])
            if fanout is not None:
                self.outbox.promote(fanout, stream)

    def leave(self, stream: Stream) -> None:
        """Detach `stream`; a channel's last local subscriber unsubscribes it."""
        if stream.identity is not None and stream in self._streams:
            self.roster.depart(stream.channels, stream.identity)
        self._streams.discard(stream)
        if not self._streams:
            self._empty.set()
        for channel in stream.channels:
            fanout = self._channels.get(channel)
            if fanout is None:
                continue
            fanout.individual.discard(stream)
            fanout.sharing.discard(stream)
            fanout.composed.discard(stream)
            if self._changed is not None:
                self._changed.add(channel)
            if not fanout:
                del self._channels[channel]
                del self._ready[channel]
                self._broker.unsubscribe(channel)

    def deliver(self, channel: str, message: Message) -> None:
        """Encode `message` once and queue the same bytes on every local subscriber."""
        self._metrics.counts.messages_received += 1
        fanout = self._channels.get(channel)
        if fanout is None:
            return
        self._metrics.observe_published(message.published_ms)
        frame = message.frame()
        if fanout.individual:
            id_ = message.position()
            for stream in fanout.individual:
                stream.push(frame, id_)
        if fanout.sharing:
            self.outbox.share(fanout, frame)
        if fanout.composed:
            for stream in fanout.composed:
                stream.compose(channel, message)
        if message.closes or fanout.ended is not None or fanout.unheard:
            self._heard(fanout, message)

    def _heard(self, fanout: Fanout[Stream], message: Message) -> None:
        """A message that tells whether its channel is closed: one that closes it ends
        every live stream whose channels are now all closed, after what it was sent."""
        position = message.position()
        if position is None:
            return  # raw text, outside the sequence
        fanout.unheard = False
        fanout.ended = position if message.closes else None
        if fanout.ended is None:
            return
        finished = [s for s in fanout.streams() if s.live and self.finished(s)]
        if finished:
            self.outbox.flush()  # the closing message reaches them first
            for stream in finished:
                stream.close("closed")

    def close_all(self, reason: DisconnectReason) -> None:
        """End every open stream, each with its own jittered `retry:` so reconnects spread."""
        self._retire(list(self._streams), reason)

    def expiry(self) -> float:
        """When a stream opened now should end (jittered), or infinity without a max age."""
        if not self._max_age:
            return math.inf
        return asyncio.get_running_loop().time() + self._max_age * random.uniform(0.9, 1.1)

    def _retire(self, streams: list[Stream], reason: DisconnectReason) -> None:
        # (An ended stream stays listed until its connection is gone: it is left alone.)
        live = [stream for stream in streams if not stream.ended]
        if live:
            self.outbox.flush()  # what was delivered before reaches them first
        for stream in live:
            stream.push(encode_retry(jittered_retry(self._retry_ms)), event=False)
            stream.close(reason)

    async def emptied(self) -> None:
        """Return once no stream is open."""
        await self._empty.wait()

    async def _beat(self) -> None:
        interval = self._heartbeat_interval
        # Ticking at a quarter of the interval bounds silence to 1.25 intervals.
        tick = interval / 4 if not self._max_age else min(interval, self._max_age) / 4
        tick = min(tick, MAX_TICK)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            due = now - interval
            # Rebalancing after a scale-out, and tokens that expired.
            expired = [stream for stream in self._streams if stream.expires_at <= now]
            for reason in EXPIRIES:
                self._retire([s for s in expired if s.expiry == reason], reason)
            for stream in self._streams:
                if stream.last_write <= due:
                    stream.beat()
