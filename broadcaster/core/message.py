"""The message value, and the envelope nodes receive over Redis pub/sub."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from broadcaster.core.ids import EventId
from broadcaster.core.metrics import MalformedReason
from broadcaster.core.sse import check_field, encode_event

# `sse_publish` (library.lua) publishes "<mark>\n<id>\n<prev>\n<event>\n<ms>\n<data>" to
# the channel's durable pub/sub channel, `<prefix>#<channel>`. The plain one,
# `<prefix><channel>`, carries raw text (`redis-cli PUBLISH sse:<channel> text`), always
# taken as event data: no channel name holds a `#`, so text relayed through the raw path
# can never pass for an envelope, whatever it looks like.
ENVELOPE_MARK = b"\x00bc1"
CLOSING_MARK = ENVELOPE_MARK + b"c"  # the envelope of a message that closes its channel
# A live-only message (presence's `join` and `leave`): no id and no prev, never stored.
LIVE_MARK = ENVELOPE_MARK + b"l"
DURABLE = "#"  # between the prefix and the channel name, for the durable channel
_FIELDS = 6
_MARK = ENVELOPE_MARK.decode()
_CLOSING = CLOSING_MARK.decode()
_LIVE = LIVE_MARK.decode()


@dataclass(frozen=True, slots=True)
class Message:
    """One published event.

    `id` is set for durable messages; `prev` is the id of the previous durable message of
    the same channel (how a node notices a lost message), and `published_ms` its publish
    time on the broker's clock. A message that `closes` is its channel's last (until one
    reopens it): a stream of closed channels ends after it.
    """

    data: str
    event: str | None = None
    id: str | None = None
    prev: str | None = None
    published_ms: int | None = None
    closes: bool = False
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


def plain(payload: bytes, repairs: Counter[MalformedReason] | None = None) -> Message:
    """A raw publish: its text is the event data, with no type and no id.

    Invalid UTF-8 is replaced (and counted in `repairs["utf8"]`), never fatal.
    """
    return Message(_text(payload, repairs))


def unpack(payload: bytes, repairs: Counter[MalformedReason] | None = None) -> Message:
    """Read an envelope from the durable channel. Invalid UTF-8 is replaced (and counted
    in `repairs["utf8"]`). Raises ValueError for anything but a well-formed envelope."""
    text = _text(payload, repairs)  # one decode for every field: this is the hot path
    parts = text.split("\n", _FIELDS - 1)
    if parts[0] != _MARK and parts[0] != _CLOSING and parts[0] != _LIVE:
        raise ValueError("not an envelope")
    if len(parts) != _FIELDS:
        raise ValueError("bad envelope: too few fields")
    _, id_, prev, event, ms, data = parts
    if not ms.isdigit():
        raise ValueError("bad envelope: publish time is not a number")
    if parts[0] == _LIVE:
        if id_ or prev:
            raise ValueError("bad envelope: a live-only message has no id")
        return Message(data, event or None, published_ms=int(ms))
    if not id_:
        raise ValueError("bad envelope: no id")
    return Message(data, event or None, id_, prev or None, int(ms), parts[0] == _CLOSING)


def _text(raw: bytes, repairs: Counter[MalformedReason] | None) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        if repairs is not None:
            repairs["utf8"] += 1
        return raw.decode("utf-8", "replace")
