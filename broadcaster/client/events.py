"""The event-stream format as a client reads it, per the WHATWG HTML standard: lines
split on CRLF, CR or LF, blocks decoded into events, and what a `reset` tells a person.

The event stream is parsed here rather than with httpx-sse: its `iter_sse` also yields a
`retry:`-only block, a bare `id:` block and every heartbeat after the first id as if they
were empty `message` events, which cannot be told from a real event with empty data.
Only events with a data line are events; every block end, with or without one, moves
the position (a bare `id:` after a `reset` must).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

DEFAULT_RETRY_MS = 3000
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the stream: its own `id:` (None when it has none), type and data."""

    id: str | None
    event: str
    data: str


class EventDecoder:
    """The event-stream interpretation of the HTML standard, one line at a time.

    `last_event_id` is the position to resume from: it changes when a block ends (a
    blank line), whether or not the block is an event, so a bare `id:` block moves it and
    an empty `id:` clears it. `retry_ms` holds the latest `retry:` hint.
    """

    def __init__(self, last_event_id: str = "", retry_ms: int = DEFAULT_RETRY_MS) -> None:
        self.last_event_id = last_event_id
        self.retry_ms = retry_ms
        self._id_buffer = last_event_id
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def restart(self) -> None:
        """Forget a block cut off with its connection; keep the position and the hint.

        Browsers start a new connection's id buffer at the current position, so an event
        without an id does not clear it.
        """
        self._id_buffer, self._id, self._event, self._data = self.last_event_id, None, "", []

    def feed(self, line: str) -> Event | None:
        """Take one line (without its line break); return the event it completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        self.last_event_id = self._id_buffer
        event = None
        if self._data:
            event = Event(self._id, self._event or "message", "\n".join(self._data))
        self._id, self._event, self._data = None, "", []
        return event


class LineSplitter:
    """UTF-8 bytes in, lines out: split on CRLF, CR or LF, and only those.

    A CR at the end of a chunk waits for the next one, in case an LF follows. An
    unterminated last line is dropped, as the standard says.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False

    def feed(self, chunk: bytes) -> list[str]:
        """The lines `chunk` completes."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            text, self._started = text.removeprefix("\ufeff"), True
        buffer = self._buffer + text
        lines, start = [], 0
        for match in _LINE_BREAK.finditer(buffer):
            if match.group() == "\r" and match.end() == len(buffer):
                break
            lines.append(buffer[start : match.start()])
            start = match.end()
        self._buffer = buffer[start:]
        return lines

    def end(self) -> list[str]:
        """The last line, if the bytes ended with a CR that could not be CRLF."""
        buffer = self._buffer + self._decoder.decode(b"", final=True)
        self._buffer = ""
        return [buffer[:-1]] if buffer.endswith("\r") else []


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """The lines of UTF-8 `chunks` (see `LineSplitter`)."""
    splitter = LineSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.end()


def reset_notice(event: Event) -> str | None:
    """The line telling a person what a `reset` event means, or None for other events."""
    if event.event != "reset":
        return None
    try:
        body = json.loads(event.data)
        channels = ", ".join(str(c) for c in body["channels"])
        reason = str(body["reason"])
    except (ValueError, TypeError, KeyError):
        return f"reset ({event.data}): history was lost; reload your state"
    meaning = {
        "malformed": "the id to resume from is not valid",
        "unavailable": "history could not be read",
    }.get(reason, "history was lost")
    return f"reset on {channels} ({reason}): {meaning}; reload your state"
