"""Publishing from async code: one message, many in one round trip, or a token stream."""

from __future__ import annotations

import asyncio
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Self, TypeVar

from broadcaster.client.coalesce import MAX_BYTES, Chunk, Clock, Coalescer
from broadcaster.client.items import Item, StreamShape, publications
from broadcaster.client.retries import MAX_PENDING, Retries
from broadcaster.core.publication import Data, Publication

Send = Callable[[Sequence[Publication]], Awaitable[list[str]]]
"""Publishes a batch in order (retrying as the publisher does); the ids."""
T = TypeVar("T")


class Publisher(ABC):
    """`publish`, `publish_many` and `stream` over one way of sending a batch in order.

    With `retries` (default 3), every message carries an idempotency key (its own, or one
    made here), and a batch that fails on a connection error or timeout is sent again
    with the same keys: Redis publishes each message at most once.
    """

    retryable: tuple[type[BaseException], ...] = ()

    def __init__(self, *, retries: int = 3) -> None:
        self._retries = Retries(retries)
        self.clock: Clock = time.monotonic  # times `stream`'s coalescing (tests fake it)

    @abstractmethod
    async def _send(self, batch: Sequence[Publication]) -> list[str]:
        """Publish `batch` in order, in one round trip; return the ids."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections."""

    async def publish(
        self,
        channel: str,
        data: Data,
        event: str | None = None,
        *,
        idempotency_key: str | None = None,
        close: bool = False,
        reopen: bool = False,
    ) -> str:
        """Publish one message; returns its id. With `close`, it is the channel's last:
        subscribers get it, then the end of their stream, and the channel refuses
        publishes (ChannelClosed) but those with `reopen`. Raises ValueError for bad input."""
        [sent] = await self._deliver(
            [Publication.of(channel, data, event, idempotency_key, close=close, reopen=reopen)]
        )
        return sent

    async def publish_many(self, items: Iterable[Item]) -> list[str]:
        """Publish messages in order, in one round trip; returns their ids."""
        batch = publications(items)
        return await self._deliver(batch) if batch else []

    async def stream(
        self,
        channel: str,
        source: AsyncIterable[Data] | Iterable[Data],
        event: str = "token",
        done_event: str = "done",
        *,
        coalesce: float = 0,
        coalesce_bytes: int = MAX_BYTES,
        close: bool = True,
        reopen: bool = False,
    ) -> list[str]:
        """Publish each chunk of `source` as an `event`, in order, then `done_event`.

        Chunks that arrive while a batch is on its way go out together in the next one, so
        a fast source never waits a round trip per chunk. With `coalesce` seconds, chunks
        that arrive within that window of an event's first chunk are merged into that one
        event (text concatenated; otherwise a JSON array), of at most `coalesce_bytes`
        (see `broadcaster.client.coalesce`); a chunk after a quiet spell still goes out
        within the window. If the source raises, an `error` event with a one-line reason
        ends the stream instead (after the event pending), and the exception propagates.
        Returns the ids of every event published. Raises ValueError for bad arguments.

        The `done_event` (or `error`) closes the channel, unless `close` is False: its
        subscribers' streams end after it. A closed channel refuses the stream
        (ChannelClosed) unless `reopen`, which lets each of its events reopen it.
        """
        shape = StreamShape.of(channel, event, done_event, close=close, reopen=reopen)
        sender = _Sender(self._deliver, shape, Coalescer(coalesce, coalesce_bytes), self.clock)
        chunks = _chunks(source)
        try:
            while True:
                try:
                    chunk = Chunk.of(await anext(chunks))
                except StopAsyncIteration:
                    return await sender.end()
                except Exception as failure:
                    await sender.end(failure)
                    raise
                await sender.add(chunk)
        finally:
            sender.cancel()

    async def _deliver(self, batch: Sequence[Publication]) -> list[str]:
        batch = self._retries.keyed(batch)
        return await self._retrying(lambda: self._send(batch))

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, again after each of the publisher's retryable failures while its
        retries last (a send keyed for it, or a read)."""
        for attempt in itertools.count():
            try:
                return await call()
            except self.retryable as failure:
                delay = self._retries.delay(attempt, failure)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _chunks(source: AsyncIterable[Data] | Iterable[Data]) -> AsyncIterator[Data]:
    if isinstance(source, AsyncIterable):
        async for chunk in source:
            yield chunk
    else:
        for chunk in source:
            yield chunk


class _Sender:
    """Sends a stream's events in order, a batch at a time: all that waited go in the next.

    It owns the stream's `Coalescer`, and sends the pending event when its window passes.
    """

    def __init__(
        self, deliver: Send, shape: StreamShape, coalescer: Coalescer, clock: Clock
    ) -> None:
        self._deliver = deliver
        self._shape = shape
        self._coalescer = coalescer
        self._clock = clock
        self._pending: list[Publication] = []
        self._ids: list[str] = []
        self._closing = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task = asyncio.create_task(self._run())

    async def add(self, chunk: Chunk) -> None:
        """Take one chunk; waits while MAX_PENDING are queued. Raises the sender's failure."""
        await self._wait_for_room()
        self._queue(self._coalescer.add(chunk, self._clock()))
        self._wake.set()  # also to time a new pending event

    async def end(self, failure: BaseException | None = None) -> list[str]:
        """Send the pending event, then `done` (or `error` for `failure`); return every id."""
        await self._wait_for_room()
        self._queue(self._coalescer.flush())
        if failure is None:
            self._pending.append(self._shape.done(self._coalescer.counts()))
        else:
            self._pending.append(self._shape.error(failure))
        self._closing = True
        self._wake.set()
        return await self._task

    def cancel(self) -> None:
        """Stop sending (the stream is over, or was cancelled)."""
        self._task.cancel()

    async def _wait_for_room(self) -> None:
        while len(self._pending) >= MAX_PENDING and not self._task.done():
            self._room.clear()
            await self._room.wait()  # set when a batch leaves, and when the sender stops
        if self._task.done():
            self._task.result()  # the send failure, raised here
            raise RuntimeError("the stream's sender stopped")

    def _queue(self, events: list[str]) -> None:
        self._pending += [self._shape.chunk(data) for data in events]

    async def _run(self) -> list[str]:
        try:
            while True:
                # Woken by a chunk, the end, or the pending event's window passing.
                await _woken(self._wake, self._coalescer.wait(self._clock()))
                self._wake.clear()
                self._queue(self._coalescer.due(self._clock()))
                while self._pending:
                    batch, self._pending = self._pending, []
                    self._room.set()
                    self._ids += await self._deliver(batch)
                if self._closing:
                    return self._ids
        finally:
            self._room.set()


async def _woken(wake: asyncio.Event, within: float | None) -> None:
    """Wait until `wake` is set, or `within` seconds have passed (None: no bound). (Not
    `asyncio.timeout`: in Python 3.11, one that fires as the task is cancelled can
    swallow the cancellation.)"""
    if within is None:
        await wake.wait()
        return
    waiter = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait([waiter], timeout=within)
    finally:
        waiter.cancel()
