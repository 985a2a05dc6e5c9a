"""A spec-following event-stream parser (WHATWG HTML, "Interpreting an event stream")."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event, as a browser's EventSource would see it."""

    data: str
    event: str = "message"
    id: str = ""


@dataclass(slots=True)
class Parser:
    """Feed text in any pieces; complete events come out."""

    last_event_id: str = ""
    retry: int | None = None
    comments: int = 0
    _buffer: str = ""
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _has_data: bool = False

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
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, has_data, event = self._data, self._has_data, self._event
        self._data, self._has_data, self._event = [], False, ""
        if not has_data:
            return None
        return Event("\n".join(data), event or "message", self.last_event_id)


def parse(text: str) -> list[Event]:
    """Every complete event in `text`."""
    return Parser().feed(text)
