"""Publishing from synchronous code (Django, Flask, Celery): the same surface, no event loop.

A sync publisher is safe to share between threads, and to call from an event loop's
thread pool; it never starts an event loop of its own.
"""

from __future__ import annotations

import itertools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Self, TypeVar

from broadcaster.client.coalesce import MAX_BYTES, Chunk, Clock, Coalescer
from broadcaster.client.items import Item, StreamShape, publications
from broadcaster.client.retries import MAX_PENDING, Retries
from broadcaster.core.publication import Data, Publication

SendSync = Callable[[Sequence[Publication]], list[str]]
"""Publishes a batch in order (retrying as the publisher does); the ids."""
T = TypeVar("T")


class SyncPublisher(ABC):
    """`publish`, `publish_many` and `stream` over one way of sending a batch in order.

    Retries work as in the async publishers: every message carries an idempotency key,
    so a batch sent again after a connection error or timeout is never published twice.
    """

    retryable: tuple[type[BaseException], ...] = ()

    def __init__(self, *, retries: int = 3) -> None:
        self._retries = Retries(retries)
        self.clock: Clock = time.monotonic  # times `stream`'s coalescing (tests fake it)

    @abstractmethod
    def _send(self, batch: Sequence[Publication]) -> list[str]:
        """Publish `batch` in order, in one round trip; return the ids."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def publish(
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
        [sent] = self._deliver(
            [Publication.of(channel, data, event, idempotency_key, close=close, reopen=reopen)]
        )
        return sent

    def publish_many(self, items: Iterable[Item]) -> list[str]:
        """Publish messages in order, in one round trip; returns their ids."""
        batch = publications(items)
        return self._deliver(batch) if batch else []

    def stream(
        self,
        channel: str,
        source: Iterable[Data],
        event: str = "token",
        done_event: str = "done",
        *,
        coalesce: float = 0,
        coalesce_bytes: int = MAX_BYTES,
        close: bool = True,
        reopen: bool = False,
    ) -> list[str]:
        """Publish each chunk of `source` as an `event`, in order, then `done_event`.

        A thread sends while this one reads the source: chunks that arrive while a batch
        is on its way go out together in the next one. With `coalesce` seconds, chunks
        that arrive within that window of an event's first chunk are merged into that one
        event (text concatenated; otherwise a JSON array), of at most `coalesce_bytes`
        (see `broadcaster.client.coalesce`); the sending thread times the window, so a
        chunk after a quiet spell still goes out within it. If the source raises, an
        `error` event with a one-line reason ends the stream instead (after the event
        pending), and the exception propagates. Returns the ids of every event published.
        Raises ValueError for bad arguments.

        The `done_event` (or `error`) closes the channel, unless `close` is False: its
        subscribers' streams end after it. A closed channel refuses the stream
        (ChannelClosed) unless `reopen`, which lets each of its events reopen it.
        """
        shape = StreamShape.of(channel, event, done_event, close=close, reopen=reopen)
        sender = _Sender(self._deliver, shape, Coalescer(coalesce, coalesce_bytes), self.clock)
        chunks = iter(source)
        try:
            while True:
                try:
                    chunk = Chunk.of(next(chunks))
                except StopIteration:
                    return sender.end()
                except Exception as failure:
                    sender.end(failure)
                    raise
                sender.add(chunk)
        finally:
            sender.stop()

    def _deliver(self, batch: Sequence[Publication]) -> list[str]:
        batch = self._retries.keyed(batch)
        return self._retrying(lambda: self._send(batch))

    def _retrying(self, call: Callable[[], T]) -> T:
        """`call()`, again after each of the publisher's retryable failures while its
        retries last (a send keyed for it, or a read)."""
        for attempt in itertools.count():
            try:
                return call()
            except self.retryable as failure:
                delay = self._retries.delay(attempt, failure)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Sender:
    """A thread that sends a stream's events in order, a batch at a time.

    It owns the stream's `Coalescer` (behind its lock), and sends the pending event when
    its window passes.
    """

    def __init__(
        self, deliver: SendSync, shape: StreamShape, coalescer: Coalescer, clock: Clock
    ) -> None:
        self._deliver = deliver
        self._shape = shape
        self._coalescer = coalescer
        self._clock = clock
        self._pending: list[Publication] = []
        self._ids: list[str] = []
        self._failure: BaseException | None = None
        self._closing = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="broadcaster-stream", daemon=True)
        self._thread.start()

    def add(self, chunk: Chunk) -> None:
        """Take one chunk; waits while MAX_PENDING are queued. Raises the sender's failure."""
        with self._changed:
            self._wait_for_room()
            self._queue(self._coalescer.add(chunk, self._clock()))
            self._changed.notify_all()  # also to time a new pending event

    def end(self, failure: BaseException | None = None) -> list[str]:
        """Send the pending event, then `done` (or `error` for `failure`); return every id."""
        with self._changed:
            self._wait_for_room()
            self._queue(self._coalescer.flush())
            if failure is None:
                self._pending.append(self._shape.done(self._coalescer.counts()))
            else:
                self._pending.append(self._shape.error(failure))
            self._closing = True
            self._changed.notify_all()
        self._thread.join()
        self._raise_failure()
        return self._ids

    def stop(self) -> None:
        """Send nothing more (the stream is over, or failed)."""
        with self._changed:
            self._closing = True
            self._pending.clear()
            self._changed.notify_all()

    def _wait_for_room(self) -> None:
        self._changed.wait_for(
            lambda: len(self._pending) < MAX_PENDING or not self._thread.is_alive()
        )
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _queue(self, events: list[str]) -> None:
        self._pending += [self._shape.chunk(data) for data in events]

    def _next_batch(self) -> list[Publication]:
        """Waits for events to send (the pending one once its window passes); [] at the end."""
        with self._changed:
            while True:
                if not self._closing:  # (stopped: nothing more goes out)
                    self._queue(self._coalescer.due(self._clock()))
                if self._pending or self._closing:
                    batch, self._pending = self._pending, []
                    self._changed.notify_all()
                    return batch
                self._changed.wait(self._coalescer.wait(self._clock()))

    def _run(self) -> None:
        try:
            while batch := self._next_batch():
                self._ids += self._deliver(batch)
        except BaseException as failure:  # handed to the caller's thread, raised there
            self._failure = failure
        finally:
            with self._changed:
                self._changed.notify_all()
