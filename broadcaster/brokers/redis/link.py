"""The pub/sub link: one Redis connection's protocol, commands and acknowledgements.

One writer sends SUBSCRIBE, UNSUBSCRIBE and PING in call order; one reader hands
messages on and resolves each SUBSCRIBE's future on its own acknowledgement, and each
PING's on its PONG. Redis answers in order, so a PONG is a fence: every message
published before the PING was sent has been read when it resolves.

A channel is two pub/sub channels, subscribed in one command: `<prefix><channel>` for
raw publishes and `<prefix>#<channel>` for the durable envelopes (see `message.py`).

A `sharded` link (one per shard of a Redis Cluster) uses SSUBSCRIBE and SUNSUBSCRIBE on
`<prefix>{<group>}:<channel>` and `<prefix>{<group>}:#<channel>` (one slot: the group's,
see `core/channels.py`), reads `smessage`s, and hands an unrequested `sunsubscribe`
(the slot moved, or the shard failed over) to `on_moved`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import cast

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.brokers.redis.redis_internals import streams
from broadcaster.core.message import DURABLE

DURABLE_BYTE = ord(DURABLE)

_SUBSCRIBE, _UNSUBSCRIBE, _PING = b"SUBSCRIBE", b"UNSUBSCRIBE", b"PING"
_SHARDED = {_SUBSCRIBE: b"SSUBSCRIBE", _UNSUBSCRIBE: b"SUNSUBSCRIBE", _PING: _PING}
_MESSAGES = (b"message", b"smessage")
_GROUP_END = b"}:"
READ_SIZE = 1 << 16
SILENT_CHECKS = 3  # PING intervals without a byte before the link is given up
Ack = asyncio.Future[None]  # resolves on a SUBSCRIBE's acknowledgement
Pong = asyncio.Future[bool]  # a fence: True on its PONG, False if the connection went first
Command = tuple[bytes, str, Ack | Pong | None]


class PubSubLink:
    """Subscriptions and fences over whichever connection `run` is given."""

    def __init__(
        self,
        prefix: str,
        *,
        ping_interval: float,
        on_message: Callable[[str, bytes, bool], None],
        on_subscribed: Callable[[str], None],
        sharded: bool = False,
        on_moved: Callable[[str], None] | None = None,
    ) -> None:
        self._prefix = prefix
        self._keys = KeySpace(prefix, clustered=sharded)
        self._ping_interval = ping_interval
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._sharded = sharded
        self._on_moved = on_moved
        # Per channel, SUNSUBSCRIBEs sent and not yet acknowledged: any other is Redis's.
        self._leaving: dict[str, int] = {}
        # SSUBSCRIBEs sent and not yet answered, in order: a MOVED answers the first.
        self._joining: deque[str] = deque()
        self._commands: deque[Command] = deque()
        self._wake = asyncio.Event()
        # Per channel, one entry per SUBSCRIBE sent and not yet acknowledged; likewise PINGs.
        self._acks: dict[str, deque[Ack | None]] = {}
        self._pongs: deque[Pong | None] = deque()
        self.live = False
        """Whether commands go out now (else they wait for the next `open`)."""
        self._last_read = 0.0

    def open(self, channels: Iterable[str]) -> None:
        """Begin a connection: SUBSCRIBE `channels` before any command queued later."""
        self._commands = deque((_SUBSCRIBE, channel, None) for channel in sorted(channels))
        self._acks, self._pongs, self._leaving, self._joining = {}, deque(), {}, deque()
        self.live = True
        self._wake.set()

    def close(self) -> None:
        """The connection is gone: drop queued commands and release everyone waiting."""
        self.live = False
        for pending in self._acks.values():
            for ack in pending:
                _resolve(ack)
        for pong in self._pongs:
            _answer_pong(pong, answered=False)
        for verb, _, waiter in self._commands:
            if verb == _PING:
                _answer_pong(cast(Pong | None, waiter), answered=False)
            else:
                _resolve(cast(Ack | None, waiter))
        self._commands.clear()
        self._acks, self._pongs, self._leaving, self._joining = {}, deque(), {}, deque()

    def subscribe(self, channel: str, done: Ack | None = None) -> None:
        """Queue a SUBSCRIBE; `done` resolves on its acknowledgement."""
        self._send(_SUBSCRIBE, channel, done)

    def unsubscribe(self, channel: str) -> None:
        """Queue an UNSUBSCRIBE."""
        self._send(_UNSUBSCRIBE, channel, None)

    def fence(self) -> Pong:
        """A PING: resolves to True once every message published before it has been read,
        or to False if the connection went first (which proves nothing)."""
        done: Pong = asyncio.get_running_loop().create_future()
        self._send(_PING, "", done)
        return done

    async def run(self, conn: AbstractConnection, ready: Callable[[], None]) -> None:
        """Write and read on `conn` until either side fails; raises why. `ready` is called
        once the first commands (the subscriptions of `open`) are on the wire."""
        # Not a TaskGroup: it ignores a child that ends cancelled, and Python 3.11's
        # asyncio.timeout can leave a stray cancellation that ends a loop so. The session
        # would then wait on the others forever. Here the end of any loop, however it
        # ends, ends it.
        self._last_read = asyncio.get_running_loop().time()
        loops = [
            asyncio.create_task(self._write(conn, ready), name="pubsub-writer"),
            asyncio.create_task(self._read(conn), name="pubsub-reader"),
            asyncio.create_task(self._watch(), name="pubsub-watchdog"),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.wait(loops)
            # Each loop's own error, once it was cancelled too, is the link's end: seen here.
            failures = [None if task.cancelled() else task.exception() for task in loops]
        ended = done.pop()
        raise failures[loops.index(ended)] or RedisConnectionError(f"{ended.get_name()} stopped")

    def _durable(self, name: bytes, prefix: int) -> str | None:
        """The channel whose durable pub/sub channel is `name`, or None for a raw one."""
        start = name.index(_GROUP_END, prefix) + 2 if self._sharded else prefix
        if name[start] != DURABLE_BYTE:
            return None
        return name[start + 1 :].decode("utf-8", "replace")

    def _send(self, verb: bytes, channel: str, done: Ack | Pong | None) -> None:
        self._commands.append((verb, channel, done))
        self._wake.set()

    async def _write(self, conn: AbstractConnection, ready: Callable[[], None]) -> None:
        # Written to the socket directly, as `_read` reads it: redis-py's send_command
        # wraps each write in asyncio.wait_for, which in Python 3.11 swallows a
        # cancellation that lands as the write completes. The writer then waited forever
        # and so did the node's shutdown (a stream's last UNSUBSCRIBE racing the close).
        _, stream = streams(conn)
        first = True
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not conn.is_connected:
                raise RedisConnectionError("pub/sub connection closed")
            while self._commands:
                verb, channel, done = self._commands.popleft()
                if verb == _PING:
                    self._pongs.append(cast(Pong | None, done))
                    stream.writelines(conn.pack_command(verb))
                    continue
                if verb == _SUBSCRIBE:
                    self._acks.setdefault(channel, deque()).append(cast(Ack | None, done))
                    if self._sharded:
                        self._joining.append(channel)
                elif self._sharded:
                    self._leaving[channel] = self._leaving.get(channel, 0) + 1
                raw, durable = self._keys.pubsub(channel)
                sent = _SHARDED[verb] if self._sharded else verb
                stream.writelines(conn.pack_command(sent, raw, durable))
            await stream.drain()
            if first:
                first = False
                ready()

    async def _read(self, conn: AbstractConnection) -> None:
        # The link owns this connection's protocol, so it reads the socket itself and
        # parses with hiredis: a read of many messages is handled in one go, where
        # redis-py's read_response costs an await chain and a timeout per message.
        stream, _ = streams(conn)  # redis-py's reader, idle once the handshake is done
        parser = hiredis.Reader()
        loop = asyncio.get_running_loop()
        prefix = len(self._prefix)
        sharded = self._sharded
        on_message = self._on_message
        while True:
            data = await stream.read(READ_SIZE)
            if not data:
                raise RedisConnectionError("connection closed by redis")
            self._last_read = loop.time()
            try:
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if type(reply) is list and reply[0] in _MESSAGES:
                        name = reply[1]
                        # `<prefix>#<channel>`, or `<prefix>{<group>}:#<channel>`
                        start = name.index(_GROUP_END, prefix) + 2 if sharded else prefix
                        durable = name[start] == DURABLE_BYTE
                        channel = name[start + durable :].decode("utf-8", "replace")
                        on_message(channel, reply[2], durable)
                    else:
                        self._answer(reply, prefix)
            except hiredis.ProtocolError as exc:
                raise RedisConnectionError(f"pub/sub protocol error: {exc}") from exc

    def _answer(self, reply: object, prefix: int) -> None:
        """A reply that is not a message: an acknowledgement, or a PONG."""
        if isinstance(reply, hiredis.ReplyError):
            self._refused(reply)
            return
        kind = reply[0] if isinstance(reply, list) else reply
        if kind in (b"subscribe", b"ssubscribe") and isinstance(reply, list):
            channel = self._durable(reply[1], prefix)
            if channel is not None:  # (else the first of the pair: the durable ack says both)
                self._joined(channel)
        elif kind == b"sunsubscribe" and isinstance(reply, list):
            channel = self._durable(reply[1], prefix)
            if channel is not None:
                self._left(channel)
        elif kind in (b"pong", b"PONG") and self._pongs:
            _answer_pong(self._pongs.popleft(), answered=True)

    def _joined(self, channel: str) -> None:
        if channel in self._joining:
            self._joining.remove(channel)  # (answered in order: it is the first)
        pending = self._acks.get(channel)
        if pending:
            _resolve(pending.popleft())
        self._on_subscribed(channel)

    def _left(self, channel: str) -> None:
        leaving = self._leaving.get(channel, 0)
        if leaving:
            self._leaving[channel] = leaving - 1
        elif self._on_moved is not None:
            self._on_moved(channel)  # not asked for: the slot is served elsewhere now

    def _refused(self, reply: hiredis.ReplyError) -> None:
        if not (self._sharded and str(reply).startswith("MOVED") and self._joining):
            raise RedisConnectionError(f"pub/sub command refused: {reply}")
        # An SSUBSCRIBE the node answers MOVED: the slot is served elsewhere (it knew
        # before we did). Replies come in order, so it is the first one unanswered.
        channel = self._joining.popleft()
        pending = self._acks.get(channel)
        if pending:
            _resolve(pending.popleft())
        if self._on_moved is not None:
            self._on_moved(channel)

    async def _watch(self) -> None:
        # Each interval asks: did any byte arrive since the last check? A quiet link gets
        # a PING at each check, so a live Redis always answers before the next one. The
        # question is never a race between the PONG and the clock (comparing the last
        # read's age with the interval was: three lost ties made a false outage).
        loop = asyncio.get_running_loop()
        silent = 0
        while True:
            checked = loop.time()
            if checked - self._last_read >= self._ping_interval / 2:
                self._send(_PING, "", None)
            await asyncio.sleep(self._ping_interval)
            if self._last_read >= checked:
                silent = 0
                continue
            silent += 1
            if silent >= SILENT_CHECKS:
                raise RedisTimeoutError(
                    f"redis sent nothing for {silent} PING intervals of {self._ping_interval:g} s"
                )


def _resolve(done: Ack | None) -> None:
    if done is not None and not done.done():
        done.set_result(None)


def _answer_pong(done: Pong | None, *, answered: bool) -> None:
    if done is not None and not done.done():
        done.set_result(answered)
