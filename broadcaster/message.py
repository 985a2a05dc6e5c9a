"""The message value, and the envelope nodes receive over Redis pub/sub."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .ids import EventId
from .metrics import MalformedReason
from .sse import check_field, encode_event

# `sse_publish` (redis_library.lua) publishes "<mark>\n<id>\n<prev>\n<event>\n<ms>\n<data>".
# Anything without the mark is raw event data, as `redis-cli PUBLISH sse:<channel> text`
# sends it. No real text starts with NUL.
ENVELOPE_MARK = b"\x00bc1"
_FIELDS = 6
_MARK = ENVELOPE_MARK.decode()


@dataclass(frozen=True, slots=True)
class Message:
    """One published event.

    `id` is set for durable messages; `prev` is the id of the previous durable message of
    the same channel (how a node notices a lost message), and `published_ms` its publish
    time on the broker's clock.
    """

    data: str
    event: str | None = None
    id: str | None = None
    prev: str | None = None
    published_ms: int | None = None
    _frame: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _position: EventId | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.event is not None:
            check_field("event", self.event)
        if self.id is not None:
            check_field("id", self.id)

    def frame(self) -> bytes:
        """The event-stream bytes for this message, built once and shared by all subscribers
        (and by every replay of a message kept in memory)."""
        frame = self._frame
        if frame is None:
            frame = encode_event(self.data, self.event, self.id)
            object.__setattr__(self, "_frame", frame)  # a cache, not a change of value
        return frame

    def position(self) -> EventId | None:
        """The id, parsed once for the sequencer and the hub alike; None without a valid
        one."""
        position = self._position
        if position is None and self.id is not None:
            position = EventId.parse(self.id)
            object.__setattr__(self, "_position", position)  # a cache, not a change of value
        return position


def unpack(payload: bytes, repairs: Counter[MalformedReason] | None = None) -> Message:
    """Read a pub/sub payload: an envelope, or raw text taken as the event data.

    Invalid UTF-8 is replaced (and counted in `repairs["utf8"]`), never fatal.
    Raises ValueError for a broken envelope.
    """
    text = _text(payload, repairs)  # one decode for every field: this is the hot path
    if not text.startswith(_MARK):
        return Message(text)
    parts = text.split("\n", _FIELDS - 1)
    if len(parts) != _FIELDS or parts[0] != _MARK:
        raise ValueError("bad envelope: too few fields")
    _, id_, prev, event, ms, data = parts
    if not ms.isdigit():
        raise ValueError("bad envelope: publish time is not a number")
    return Message(data, event or None, id_ or None, prev or None, int(ms))


def _text(raw: bytes, repairs: Counter[MalformedReason] | None) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        if repairs is not None:
            repairs["utf8"] += 1
        return raw.decode("utf-8", "replace")
