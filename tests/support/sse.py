"""The event stream as a browser's EventSource reads it, for tests: the product's own
decoder (`broadcaster.client.events.EventDecoder`, per the HTML standard), fed text
in any pieces, with what tests look at besides (comments, the latest `retry:`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from broadcaster.client.events import EventDecoder

_LINE = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event, as a browser's EventSource would see it (`id` is its
    `lastEventId`: the stream's position once it was dispatched)."""

    data: str
    event: str = "message"
    id: str = ""


class Parser:
    """Feed text in any pieces; complete events come out."""

    def __init__(self) -> None:
        self._decoder = EventDecoder()
        self._buffer = ""
        self.comments = 0
        self.retry: int | None = None
        """The latest valid `retry:` hint, if any came."""

    @property
    def last_event_id(self) -> str:
        """Where a reconnect resumes from."""
        return self._decoder.last_event_id

    def feed(self, text: str) -> list[Event]:
        """Parse `text`; return the events it completes."""
        self._buffer += text
        events: list[Event] = []
        while True:
            match = _LINE.search(self._buffer)
            # A lone CR at the end may be the first half of CRLF: wait for more.
            if match is None or (match.group() == "\r" and match.end() == len(self._buffer)):
                return events
            line, self._buffer = self._buffer[: match.start()], self._buffer[match.end() :]
            if line.startswith(":"):
                self.comments += 1
            elif line.partition(":")[0] == "retry":
                self.retry = self._retry(line)
                continue
            decoded = self._decoder.feed(line)
            if decoded is not None:
                events.append(Event(decoded.data, decoded.event, self._decoder.last_event_id))

    def _retry(self, line: str) -> int | None:
        """Feed a `retry:` line; the hint if the decoder took it, else the one before."""
        decoder = self._decoder
        kept, decoder.retry_ms = decoder.retry_ms, -1  # to see whether it takes this one
        decoder.feed(line)
        if decoder.retry_ms < 0:
            decoder.retry_ms = kept
            return self.retry
        return decoder.retry_ms


def parse(text: str) -> list[Event]:
    """Every complete event in `text`."""
    return Parser().feed(text)
