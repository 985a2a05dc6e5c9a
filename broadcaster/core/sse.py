"""Server-sent events wire encoding, per the WHATWG HTML event-stream format."""

from __future__ import annotations

import random
import re

# The spec's line terminators; str.splitlines() would also split on U+2028, \x0c, \x85...
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

HEARTBEAT = b":\n\n"


def check_field(name: str, value: str) -> str:
    """Return `value` if it can stand in an `event:` or `id:` line, else raise ValueError."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"{name} must not contain CR, LF or NUL")
    return value


def encode_event(data: str, event: str | None = None, id: str | None = None) -> bytes:
    """Encode one event; every line of `data` becomes a `data:` line, empty data included."""
    parts: list[str] = []
    if id is not None:
        parts.append(f"id: {check_field('id', id)}\n")
    if event:
        parts.append(f"event: {check_field('event', event)}\n")
    if "\n" in data or "\r" in data:
        parts.extend(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    else:
        parts.append(f"data: {data}\n")  # one line, the common case: no regex
    parts.append("\n")
    return "".join(parts).encode("utf-8", "replace")


def encode_retry(ms: int) -> bytes:
    """Encode the reconnection-delay hint."""
    return f"retry: {int(ms)}\n\n".encode("ascii")


def jittered_retry(retry_ms: int) -> int:
    """A reconnect delay of 1 to 3 times `retry_ms`, so that clients told to go come back
    spread out rather than all at once."""
    return int(max(retry_ms, 100) * random.uniform(1.0, 3.0))


def encode_position(id: str) -> bytes:
    """Set the client's last event id without dispatching an event."""
    return f"id: {check_field('id', id)}\n\n".encode()


def encode_comment(text: str = "") -> bytes:
    """Encode a comment line, which clients ignore (used for heartbeats and padding)."""
    return f":{check_field('comment', text)}\n\n".encode()
