"""What a publisher hands over: a channel, the event's text, its type, an idempotency key,
and whether it closes the channel (or opens a closed one again)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import orjson

from broadcaster.core.channels import check_channel
from broadcaster.core.sse import check_field

Data = Any
"""Event data: `str`, `bytes` (UTF-8), or any JSON-serialisable value (sent as its JSON)."""

MAX_KEY_LENGTH = 255
KEY_CHARSET = "letters, digits and - _ . : @ / = +"
_KEY = re.compile(r"[A-Za-z0-9\-_.:@/=+]+")


@dataclass(frozen=True, slots=True)
class Publication:
    """One message to publish, validated, its data already serialised to text.

    `close` makes it the channel's last: subscribers get it and then the end of their
    response, and later publishes are refused (`ChannelClosed`) unless they `reopen`.
    `retry_key` says the idempotency key was made by a publisher for its own retries of
    one batch, not given by its caller: a batch call may then stand for it (see
    `brokers/redis/library.py`).
    """

    channel: str
    data: str
    event: str | None = None
    idempotency_key: str | None = None
    close: bool = False
    reopen: bool = False
    retry_key: bool = False

    @classmethod
    def of(
        cls,
        channel: str,
        data: Data,
        event: str | None = None,
        idempotency_key: str | None = None,
        *,
        close: bool = False,
        reopen: bool = False,
    ) -> Publication:
        """Validate and serialise once; raises ValueError for a bad channel, event, data or key."""
        return cls(
            check_channel(channel),
            encode_data(data),
            None if event is None else check_field("event", event),
            None if idempotency_key is None else check_key(idempotency_key),
            close,
            reopen,
        )

    def keyed(self, key: str) -> Publication:
        """This publication with `key`, a publisher's retry key, unless it has one already."""
        if self.idempotency_key is not None:
            return self
        return replace(self, idempotency_key=key, retry_key=True)

    @property
    def flags(self) -> str:
        """`sse_publish`'s flags argument: "", "close", "reopen" or "reopen close"."""
        return " ".join(name for name, on in (("reopen", self.reopen), ("close", self.close)) if on)


def encode_data(data: Data) -> str:
    """The event text of `data`: a str as is, bytes decoded as UTF-8, anything else as JSON."""
    if isinstance(data, str):
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            return bytes(data).decode()
        except UnicodeDecodeError as exc:
            raise ValueError(f"data bytes are not UTF-8: {exc}") from None
    try:
        return orjson.dumps(data).decode()
    except TypeError as exc:
        if "Recursion limit" in str(exc):  # orjson's bound: 255 levels
            raise ValueError("data is nested too deeply (at most 255 levels)") from None
        raise ValueError(f"data is not JSON-serialisable: {exc}") from None


def check_key(key: str) -> str:
    """Return `key` if it is a valid idempotency key, else raise ValueError with the reason."""
    if not 0 < len(key) <= MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise ValueError(f"idempotency key must be 1 to {MAX_KEY_LENGTH} of {KEY_CHARSET}")
    return key
