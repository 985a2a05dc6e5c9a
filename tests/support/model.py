"""An in-memory model of Redis for the delivery path, and what a client's stream must get.

The node under test is the real one: `RedisBroker` (its reconnecting session, shared
replays and history-read glue), its `PubSubLink` and `Sequencer`, the `Hub` and each
`Stream`. The model stands in for what lies below them:

- `ModelRedis`: the sequence (one id counter for every channel), each channel's history
  (trimmed to `MAXLEN`, so resets happen) and the truth (every message ever published);
  one node's pub/sub connection at a time (`ModelConnection`: the commands the node sent
  and Redis has not run yet, the channels Redis has subscribed, the replies it has not
  read yet); and the history reads under way (`ModelHistory`, in place of
  `RedisHistory`), each answered, or failed, when a test says so, from the model as it
  stands at that moment (one atomic read).
- `ModelLoop`: an event loop whose clock moves only when a test moves it, so backoffs,
  retries and the replays' gather window run on the model's time, never on the wall's.
- `Watch`: one client's event stream, parsed as a browser reads it and checked, event by
  event, against the truth (see its docstring for the invariant).

`model_broker` builds a `RedisBroker` on these: it sets four private attributes (the
history reader of the broker and of its sequencer, the sequencer's clock, the function
library) and fails loudly, naming them, if the product renames them. The connection
and client are duck-typed stand-ins for redis-py's: the link writes its commands to
them and parses, with hiredis, the RESP replies the model writes back.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from broadcaster.brokers.config import DEFAULT_CONFIG
from broadcaster.brokers.redis.broker import RedisBroker
from broadcaster.brokers.redis.history import RedisHistory
from broadcaster.brokers.redis.library import Library
from broadcaster.core.history import ChannelHistory, Entry, Head, Snapshot, Start
from broadcaster.core.ids import EventId
from broadcaster.core.message import DURABLE, ENVELOPE_MARK, Message
from tests.support.sse import Event, Parser

T = TypeVar("T")

PREFIX = DEFAULT_CONFIG.prefix
BASE_MS = 1_700_000_000_000
"""The publish clock at the first id (two ids per millisecond: ids tie on `ms`)."""
MAXLEN = 3
"""Entries each channel's history keeps (`BROADCASTER_HISTORY_MAXLEN`)."""


def id_of(seq: int) -> EventId:
    """The id the sequence gives its `seq`-th message."""
    return EventId(BASE_MS + seq // 2, seq)


class ModelLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when a test moves `now`."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def time(self) -> float:
        return self.now


@dataclass(frozen=True, slots=True)
class Published:
    """One message as `sse_publish` stored it: its place in the sequence, its channel."""

    seq: int
    channel: str
    message: Message

    @property
    def entry(self) -> Entry:
        """The message as a history read returns it."""
        position = id_of(self.seq)
        return Entry(position, EventId.parse(self.message.prev), self.message)


@dataclass(frozen=True, slots=True)
class Reply:
    """Something Redis wrote to the node's pub/sub connection."""

    kind: Literal["message", "ack", "pong"]
    data: bytes
    seq: int | None = None
    """The message's place in the sequence (for a message)."""


ReadKind = Literal["head", "backfill", "replay"]
"""A session's read of the head, a backfill, a replay."""
KINDS: tuple[ReadKind, ...] = ("head", "backfill", "replay")


@dataclass(slots=True)
class Read:
    """A history read under way: answered from the model as it stands when answered."""

    kind: ReadKind
    answer: Callable[[], object]
    future: asyncio.Future[Any]


def _array(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


def _ack(kind: bytes, name: bytes, count: int) -> bytes:
    return b"*3\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n:%d\r\n" % (len(kind), kind, len(name), name, count)


def envelope(message: Message) -> bytes:
    """What `sse_publish` PUBLISHes to the durable channel (see `core/message.py`)."""
    fields = [message.id or "", message.prev or "", message.event or ""]
    fields += [str(message.published_ms), message.data]
    return ENVELOPE_MARK + b"\n" + "\n".join(fields).encode()


class _Reader:
    """The connection's socket, as the link reads it."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.eof = False
        self._more = asyncio.Event()

    def feed(self, data: bytes) -> None:
        self.chunks.append(data)
        self._more.set()

    def end(self) -> None:
        self.chunks.clear()  # (what was on its way is lost with the connection)
        self.eof = True
        self._more.set()

    async def read(self, size: int) -> bytes:
        while not self.chunks and not self.eof:
            self._more.clear()
            await self._more.wait()
        return self.chunks.popleft() if self.chunks else b""


class _Writer:
    """The connection's socket, as the link writes it: commands, as `pack_command` made."""

    def __init__(self, connection: ModelConnection) -> None:
        self._connection = connection

    def writelines(self, commands: Iterable[tuple[object, ...]]) -> None:
        if self._connection.is_connected:
            self._connection.commands.extend(commands)

    async def drain(self) -> None:
        pass


class ModelConnection:
    """A node's connection to the model Redis, as redis-py's `Connection` looks to the
    broker and its link (`redis_internals.streams` reads `_reader` and `_writer`)."""

    def __init__(self, redis: ModelRedis) -> None:
        self._redis = redis
        self.is_connected = False
        self.retry: object = None
        self._reader = _Reader()
        self._writer = _Writer(self)
        self.commands: deque[tuple[object, ...]] = deque()
        """Sent by the node, not yet run by Redis."""
        self.subscribed: set[str] = set()
        """The pub/sub channels Redis has subscribed on this connection."""
        self.replies: list[Reply] = []
        """Written by Redis, not yet read by the node (where faults are injected)."""

    async def connect(self) -> None:
        if not self._redis.up:
            raise RedisConnectionError("model: redis is out of reach")
        self.is_connected = True
        self._redis.connection = self

    async def send_command(self, *args: object, **options: object) -> None:
        if not self.is_connected:
            raise RedisConnectionError("model: not connected")

    async def read_response(self) -> bytes:
        return b"# Replication\r\nmaster_replid:model\r\n"  # (the answer to INFO)

    def pack_command(self, *args: object) -> list[tuple[object, ...]]:
        return [args]

    async def disconnect(self, nowait: bool = False) -> None:
        self.drop()

    def drop(self) -> None:
        """The connection is gone: what Redis had not sent, or the node not read, is lost."""
        if self.is_connected:
            self.is_connected = False
            self.commands.clear()
            self.replies.clear()
            self.subscribed.clear()
            if self._redis.connection is self:
                self._redis.connection = None
        self._reader.end()

    def execute(self, count: int) -> int:
        """Redis runs the next `count` commands of the node; how many it ran."""
        ran = 0
        while self.commands and ran < count:
            verb, *names = self.commands.popleft()
            ran += 1
            if verb == b"PING":
                self.replies.append(Reply("pong", _array(b"pong", b"")))
                continue
            for name in names:
                assert isinstance(name, str)
                if verb == b"SUBSCRIBE":
                    self.subscribed.add(name)
                    kind = b"subscribe"
                else:
                    self.subscribed.discard(name)
                    kind = b"unsubscribe"
                self.replies.append(Reply("ack", _ack(kind, name.encode(), len(self.subscribed))))
        return ran

    def transmit(self, count: int) -> int:
        """The node reads the next `count` replies, in one read; how many it read."""
        taken, self.replies = self.replies[:count], self.replies[count:]
        if taken:
            self._reader.feed(b"".join(reply.data for reply in taken))
        return len(taken)


class ModelRedis:
    """The sequence, the channels' history and the truth, one node's pub/sub connection,
    and the history reads under way."""

    def __init__(self) -> None:
        self.log: list[Published] = []
        """Every message ever published: `log[seq - 1]` is the `seq`-th."""
        self.channels: dict[str, list[Published]] = {}
        """Each channel's messages (its history keeps the last `MAXLEN`)."""
        self.up = True
        """Whether a node can connect."""
        self.connection: ModelConnection | None = None
        self.reads: list[Read] = []
        self.backfill_head = 0
        """The head (as a `seq`) of the last backfill read answered."""

    @property
    def seq(self) -> int:
        """The newest `seq` issued (0: none yet)."""
        return len(self.log)

    @property
    def now_ms(self) -> int:
        """The publish clock now."""
        return id_of(self.seq).ms

    def publish(self, channel: str) -> Published:
        """`FCALL sse_publish`: the next id, appended to the channel's history and
        published to the node if its connection subscribes the channel."""
        seq = self.seq + 1
        history = self.channels.setdefault(channel, [])
        prev = history[-1].message.id if history else None
        position = id_of(seq)
        message = Message(f"{channel}:{seq}", None, str(position), prev, position.ms)
        published = Published(seq, channel, message)
        self.log.append(published)
        history.append(published)
        connection = self.connection
        name = PREFIX + DURABLE + channel
        if connection is not None and name in connection.subscribed:
            payload = _array(b"message", name.encode(), envelope(message))
            connection.replies.append(Reply("message", payload, seq))
        return published

    def retained(self, channel: str, head: int | None = None) -> list[Published]:
        """What the channel's history held when the head was `head` (now by default)."""
        messages = self.channels.get(channel, [])
        if head is not None:
            messages = [p for p in messages if p.seq <= head]
        return messages[-MAXLEN:]

    def flow(self) -> bool:
        """Redis runs every command, the node reads every reply; whether any moved."""
        connection = self.connection
        if connection is None:
            return False
        ran = connection.execute(len(connection.commands))
        return bool(ran + connection.transmit(len(connection.replies)))

    # History reads: the reads `RedisHistory` makes, answered when a test says.

    async def ask(self, kind: ReadKind, answer: Callable[[], T]) -> T:
        """Send a read; it returns once `answer` is called (and it was not failed)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.reads.append(Read(kind, answer, future))
        return await future

    def pending(self, kinds: Container[str] = KINDS) -> list[Read]:
        """The reads of `kinds` under way (not given up by their reader)."""
        self.reads = [read for read in self.reads if not read.future.done()]
        return [read for read in self.reads if read.kind in kinds]

    def answer(self, pick: int = 0, *, fail: bool = False, kinds: Container[str] = KINDS) -> bool:
        """Answer (or fail) one read of `kinds` under way; whether there was one."""
        reads = self.pending(kinds)
        if not reads:
            return False
        read = reads[pick % len(reads)]
        self.reads.remove(read)
        if fail:
            read.future.set_exception(RedisConnectionError(f"model: the {read.kind} read failed"))
        else:
            read.future.set_result(read.answer())
        return True

    def answer_all(self, kinds: Container[str] = KINDS) -> bool:
        """Answer every read of `kinds` under way, oldest first; whether there was one."""
        answered = False
        while self.answer(kinds=kinds):
            answered = True
        return answered

    def head(self) -> Head | None:
        """The sequence's head."""
        return Head(id_of(self.seq), BASE_MS) if self.seq else None

    def backfill(self, positions: Mapping[str, str]) -> Snapshot:
        """What `RedisHistory.read` answers: each channel's entries after its position."""
        history = {}
        for channel, after in positions.items():
            position = EventId.parse(after)
            kept = self.retained(channel)
            entries = [] if position is None else [p.entry for p in kept if id_of(p.seq) > position]
            history[channel] = ChannelHistory.after(position, bool(kept), entries)
        self.backfill_head = self.seq
        return Snapshot(self.head(), self.now_ms, 0, history)

    def replay(self, channels: Sequence[str], start: Start) -> Snapshot:
        """What `RedisHistory.snapshot` answers (no byte bound, one page): each channel's
        entries after `start.after`, or all it keeps (`begin` takes the `tail`)."""
        position = None if start.after is None else EventId.parse(start.after)
        history = {}
        for channel in channels:
            kept = self.retained(channel)
            if start.after is None:
                history[channel] = ChannelHistory(bool(kept), [p.entry for p in kept])
            elif position is None:
                history[channel] = ChannelHistory(bool(kept), [])  # malformed: `begin` resets
            else:
                entries = [p.entry for p in kept if id_of(p.seq) > position]
                history[channel] = ChannelHistory.after(position, bool(kept), entries)
        return Snapshot(self.head(), self.now_ms, 0, history)


class ModelHistory:
    """`RedisHistory` on the model: every read waits for the test to answer it."""

    def __init__(self, redis: ModelRedis) -> None:
        self._redis = redis

    async def head(self) -> EventId | None:
        head = await self._redis.ask("head", self._redis.head)
        return None if head is None else head.last

    async def read(self, positions: Mapping[str, str]) -> Snapshot:
        wanted = dict(positions)
        return await self._redis.ask("backfill", lambda: self._redis.backfill(wanted))

    async def closed(self, channels: Sequence[str]) -> dict[str, EventId]:
        return {}  # (the model closes no channel: answered at once, not asked)

    async def snapshot(self, channels: Sequence[str], start: Start) -> Snapshot:
        wanted = list(channels)
        return await self._redis.ask("replay", lambda: self._redis.replay(wanted, start))


class _Pool:
    def __init__(self, redis: ModelRedis) -> None:
        self._redis = redis

    def make_connection(self) -> ModelConnection:
        return ModelConnection(self._redis)


class _Client:
    """The part of `redis.asyncio.Redis` the broker's session uses."""

    def __init__(self, redis: ModelRedis) -> None:
        self.connection_pool = _Pool(redis)

    async def aclose(self) -> None:
        pass


class _Library:
    """The function library: always loaded; the ids the node reports are noted."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def load(self, client: object, *, replace: bool) -> None:
        pass

    async def report_seen(self, client: object, seen: str, channel: str = "") -> None:
        self.seen.append(seen)


def model_broker(redis: ModelRedis, clock: Callable[[], float]) -> RedisBroker:
    """A real `RedisBroker` whose connections, history reads, function library and
    sequencer clock are the model's. (Never connects anywhere: `_Client` makes
    `ModelConnection`s.)"""
    broker = RedisBroker(cast(aioredis.Redis, _Client(redis)), ping_interval=1e9, max_backoff=5.0)
    sequencer = broker._sequencer
    for owner, name in (
        (broker, "_history"),
        (broker, "_library"),
        (broker._reports, "_library"),
        (sequencer, "_history"),
        (sequencer, "_clock"),
    ):
        if not hasattr(owner, name):
            raise AttributeError(
                f"tests/support/model.py plugs into {type(owner).__name__}.{name}, "
                "which is gone: update model_broker"
            )
    history = ModelHistory(redis)
    broker._history = cast(RedisHistory, history)
    broker._library = broker._reports._library = cast(Library, _Library())
    sequencer._history = history
    sequencer._clock = clock
    return broker


@dataclass
class Watch:
    """One client's event stream, checked event by event against the truth.

    The invariant: ids only grow (no duplicate, no reordering), every event is a message
    of one of the stream's channels, and, channel by channel, the stream holds every
    message after its start up to the newest it got (a prefix of the truth), except
    where a `reset` named the channel: a reset from the node's backfill (at the head of
    the read that found the channel trimmed) excuses what the channel lost up to that
    head, and moves its start there. A message missing from one channel may wait for
    its reset while other channels go on, but not past the channel's next message.

    `starts` are exclusive, as `seq`s: the replay's `after` (its head, for a channel it
    reset), or where what it replayed began. A live-only stream (or one whose replay
    was unavailable) starts where its subscription was confirmed (`loose`): it may get
    older messages too, in order, that were on their way.
    """

    redis: ModelRedis
    channels: tuple[str, ...]
    starts: dict[str, int] | None = None
    loose: bool = False
    replay_resets: int = 0
    """The replay's own resets, still to come first (checked against the model when the
    replay was read)."""
    live_resets: list[tuple[str, int]] = field(default_factory=list)
    """The node's backfill resets on their way to this stream: channel and the head of
    the read that found it trimmed."""
    last: int = 0
    received: list[int] = field(default_factory=list)
    holes: dict[str, set[int]] = field(default_factory=dict)
    """Messages missing so far, channel by channel, that a reset may still excuse."""
    positions: list[str] = field(default_factory=list)
    """Each Last-Event-ID the client held (where it could resume from)."""
    _parser: Parser = field(default_factory=Parser)
    _taken: int = 0

    def expect(self, starts: dict[str, int], *, loose: bool, replay_resets: int) -> None:
        """The stream's start is known (its replay was read, or it is live only)."""
        self.starts, self.loose, self.replay_resets = starts, loose, replay_resets
        self.holes = {channel: set() for channel in self.channels}

    def take(self, writes: list[bytes]) -> None:
        """Check what was written to the client since the last call."""
        for data in writes[self._taken :]:
            self._taken += 1
            for event in self._parser.feed(data.decode()):
                self._event(event)
            position = self._parser.last_event_id
            if position and (not self.positions or self.positions[-1] != position):
                self.positions.append(position)

    def missing(self) -> dict[str, list[int]]:
        """What the stream lacks of the truth after its starts (at the end: nothing)."""
        assert self.starts is not None
        lacking = {c: sorted(self.holes[c]) for c in self.channels if self.holes[c]}
        for channel in self.channels:
            floor = max(self.last, self.starts[channel])
            later = [p.seq for p in self.redis.channels.get(channel, []) if p.seq > floor]
            if later:
                lacking.setdefault(channel, []).extend(later)
        return lacking

    def _event(self, event: Event) -> None:
        starts = self.starts
        assert starts is not None, f"an event before the stream's start was known: {event}"
        if event.event == "reset":
            self._reset(event)
            return
        channel, _, number = event.data.partition(":")
        seq = int(number)
        assert 0 < seq <= self.redis.seq, f"an event never published: {event}"
        published = self.redis.log[seq - 1]
        assert published.channel == channel, f"{event} is not {published}"
        assert event.id == published.message.id, f"{event} has the id of another"
        assert channel in self.channels, f"{event} is of no channel of the stream"
        if seq in self.received:
            raise AssertionError(f"{channel}:{seq} again: a duplicate (got {self.received})")
        assert seq > self.last, f"{channel}:{seq} after {self.last}: out of order"
        if seq <= starts[channel]:
            assert self.loose, (
                f"{channel}:{seq} is not after the stream's start on {channel} "
                f"({starts[channel]}): the client had it (got {self.received})"
            )
        else:
            for other in self.channels:
                floor = max(self.last, starts[other])
                for p in self.redis.channels.get(other, []):
                    if floor < p.seq < seq:
                        self.holes[other].add(p.seq)
            assert not self.holes[channel], (
                f"{channel}:{seq} with {channel}:{sorted(self.holes[channel])} missing "
                f"before it, and no reset (got {self.received})"
            )
        self.last = seq
        self.received.append(seq)

    def _reset(self, event: Event) -> None:
        body = orjson.loads(event.data)
        if self.replay_resets:
            self.replay_resets -= 1  # the replay's: checked when it was read
            return
        assert body["reason"] == "trimmed", f"a live reset for another reason: {body}"
        assert self.starts is not None
        for channel in body["channels"]:
            found = next((n for n, (c, _) in enumerate(self.live_resets) if c == channel), None)
            assert found is not None, f"a reset of {channel} the node never sent here: {body}"
            _, head = self.live_resets.pop(found)
            self.starts[channel] = max(self.starts[channel], head)
            self.holes[channel] = {seq for seq in self.holes[channel] if seq > head}
