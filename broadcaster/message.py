"""The message value and the format nodes exchange over the broker."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .sse import check_field, encode_event

# A payload that starts with this marker is an envelope; anything else is raw event data
# (what `redis-cli PUBLISH sse:<channel> text` sends). No real text starts with NUL.
ENVELOPE_MARK = b"\x00bc1"


@dataclass(frozen=True, slots=True)
class Message:
    """One published event: its data, optional event type and optional id."""

    data: str
    event: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if self.event is not None:
            check_field("event", self.event)
        if self.id is not None:
            check_field("id", self.id)

    def frame(self) -> bytes:
        """The event-stream bytes for this message, built once and shared by all subscribers."""
        return encode_event(self.data, self.event, self.id)


def pack(message: Message) -> bytes:
    """Serialize a message for the broker."""
    body: dict[str, str] = {"d": message.data}
    if message.event:
        body["e"] = message.event
    if message.id is not None:
        body["i"] = message.id
    return ENVELOPE_MARK + orjson.dumps(body)


def unpack(payload: bytes) -> Message:
    """Read a broker payload: an envelope, or raw UTF-8 text taken as the event data.

    Raises ValueError for an envelope that does not hold a valid message.
    """
    if not payload.startswith(ENVELOPE_MARK):
        return Message(payload.decode("utf-8", "replace"))
    try:
        body = orjson.loads(payload[len(ENVELOPE_MARK) :])
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"bad envelope: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("bad envelope: not an object")
    data, event, id_ = body.get("d", ""), body.get("e"), body.get("i")
    if (
        not isinstance(data, str)
        or not isinstance(event, str | None)
        or not isinstance(id_, str | int | None)
    ):
        raise ValueError("bad envelope: wrong field types")
    return Message(data, event or None, None if id_ is None else str(id_))
