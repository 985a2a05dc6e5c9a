"""Token coalescing: a stream's chunks merged into fewer events, by one rule for the async
and the sync `stream` alike.

A `Coalescer` is told the time and never reads a clock, so both streams, and tests with a
fake clock, drive the same rule. With a window of W seconds and a bound of B bytes:

- An event is pending from its first chunk. It goes out once W seconds have passed since
  that chunk (a chunk exactly W seconds later is too late for it, and starts the next
  event), as soon as it holds B bytes, before a chunk that would take it past B bytes, at
  the end of the source, and before the stream's `error` event. A chunk is never split:
  one of B bytes or more is an event of its own.
- An event of text chunks only (`str`, or UTF-8 `bytes`) carries their text concatenated.
  An event that holds any other value carries a JSON array of its chunks' values (a text
  chunk as a JSON string), even an event of one chunk, so a reader can always tell.
- B counts the UTF-8 bytes of the event's data.
- W = 0 turns coalescing off: one event per chunk, its data as `publish` sends it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from broadcaster.core.publication import Data, encode_data

Clock = Callable[[], float]
"""Monotonic seconds: what times a window (`time.monotonic`, or a test's fake)."""

MAX_BYTES = 16 * 1024
"""The default bound of a merged event's data: far below a node's `POST /publish` limit
(`BROADCASTER_MAX_MESSAGE_BYTES`, 1 MiB by default), and a few hundred tokens."""


def check_window(seconds: float) -> float:
    """`seconds` as a coalescing window; raises ValueError unless a non-negative finite number."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise ValueError(
            f"coalesce must be a non-negative finite number of seconds, not {seconds!r}"
        )
    return float(seconds)


def check_bound(size: int) -> int:
    """`size` as a merged event's bound; raises ValueError unless a whole number from 1."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"coalesce_bytes must be a whole number of bytes from 1, not {size!r}")
    return size


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a source, serialised once."""

    text: str  # its event data, as `publish` would send it
    is_text: bool  # `str` or `bytes`, rather than a JSON value

    @classmethod
    def of(cls, data: Data) -> Chunk:
        """Raises ValueError for data `publish` refuses."""
        return cls(encode_data(data), isinstance(data, str | bytes | bytearray | memoryview))


@dataclass(frozen=True, slots=True)
class _Part:
    """A chunk inside a pending event, with its sizes in either form of the event."""

    text: str
    value: str  # as a JSON array's item
    text_bytes: int
    value_bytes: int
    is_text: bool

    @classmethod
    def of(cls, chunk: Chunk) -> _Part:
        value = orjson.dumps(chunk.text).decode() if chunk.is_text else chunk.text
        text_bytes = len(chunk.text.encode())
        value_bytes = len(value.encode()) if chunk.is_text else text_bytes
        return cls(chunk.text, value, text_bytes, value_bytes, chunk.is_text)


class Coalescer:
    """A stream's chunks as the data of its events, merged within `window` seconds and
    `max_bytes` bytes (see the module's rule). `chunks` and `events` count what went in
    and what came out."""

    def __init__(self, window: float = 0, max_bytes: int = MAX_BYTES) -> None:
        """Raises ValueError for a bad window or bound."""
        self._window = check_window(window)
        self._max_bytes = check_bound(max_bytes)
        self._parts: list[_Part] = []
        self._text_bytes = 0
        self._value_bytes = 0  # the items' only: the array adds brackets and commas
        self._all_text = True
        self._due = 0.0
        self.chunks = 0
        self.events = 0

    def add(self, chunk: Chunk, now: float) -> list[str]:
        """The data of the events complete once `chunk` arrives at `now` (none, one or two)."""
        self.chunks += 1
        if not self._window:
            self.events += 1
            return [chunk.text]
        ready = self.due(now)
        part = _Part.of(chunk)
        if self._parts and self._size(part) > self._max_bytes:
            ready += self.flush()
        if not self._parts:
            self._due = now + self._window
        self._parts.append(part)
        self._text_bytes += part.text_bytes
        self._value_bytes += part.value_bytes
        self._all_text = self._all_text and part.is_text
        if self._size() >= self._max_bytes:
            ready += self.flush()
        return ready

    def due(self, now: float) -> list[str]:
        """The pending event's data if its window has passed by `now`."""
        return self.flush() if self._parts and now >= self._due else []

    def wait(self, now: float) -> float | None:
        """Seconds from `now` until the pending event is due (0 if it is); None if none is."""
        return max(self._due - now, 0.0) if self._parts else None

    def flush(self) -> list[str]:
        """The pending event's data, if any, now."""
        if not self._parts:
            return []
        if self._all_text:
            data = "".join(part.text for part in self._parts)
        else:
            data = "[" + ",".join(part.value for part in self._parts) + "]"
        self._parts = []
        self._text_bytes = self._value_bytes = 0
        self._all_text = True
        self.events += 1
        return [data]

    def counts(self) -> dict[str, int]:
        """What the `done` event says: the source's chunks, and the events they made when
        coalescing (without it, each chunk is an event)."""
        if not self._window:
            return {"chunks": self.chunks}
        return {"chunks": self.chunks, "events": self.events}

    def _size(self, extra: _Part | None = None) -> int:
        """Bytes of the pending event's data, with `extra` added to it."""
        parts = [extra] if extra is not None else []
        if self._all_text and all(part.is_text for part in parts):
            return self._text_bytes + sum(part.text_bytes for part in parts)
        items = len(self._parts) + len(parts)
        return self._value_bytes + sum(part.value_bytes for part in parts) + items + 1
