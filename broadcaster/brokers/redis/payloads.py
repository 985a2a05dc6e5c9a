"""What a pub/sub payload carries: raw text from a channel's plain pub/sub channel, or an
envelope from its durable one (`core/message.py`); one home for both Redis brokers."""

from __future__ import annotations

import logging
from collections import Counter

from broadcaster.core.message import Message, plain, unpack
from broadcaster.core.metrics import MalformedReason

log = logging.getLogger(__name__)


def received(
    channel: str, payload: bytes, durable: bool, malformed: Counter[MalformedReason]
) -> Message | None:
    """The message `payload` carries on `channel`; None for a malformed envelope (counted
    in `malformed["envelope"]`, and logged). Raw text is always event data: never an id,
    a type or a reset, whatever it looks like."""
    if not durable:
        return plain(payload, malformed)
    try:
        return unpack(payload, malformed)
    except ValueError as exc:
        malformed["envelope"] += 1
        log.warning("dropped a malformed message on %r: %s", channel, exc)
        return None
