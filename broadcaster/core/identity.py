"""Who a subscriber is, when its token says: the JWT's `sub`, and its `info` claim."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

MAX_SUB = 256
"""Characters of a `sub` at most."""
MAX_INFO = 1024
"""Bytes of an `info` claim (as compact JSON) at most."""


@dataclass(frozen=True, slots=True)
class Identity:
    """A subscriber's `sub`, and its `info` as compact JSON text (`null` without one).

    Presence lists subscribers by `sub` (`GET /presence?clients=1`) and announces the
    first connection and the last of each (`join`, `leave`); anonymous subscribers (no
    token, or a token without `sub`) are only counted.
    """

    sub: str
    info: str = "null"

    @classmethod
    def from_claims(cls, claims: Mapping[str, object]) -> Identity | None:
        """The identity a token's claims carry (None without `sub`); raises ValueError
        saying what is wrong with a `sub` or an `info` the presence store cannot hold."""
        sub = claims.get("sub")
        if sub is None:
            return None
        if not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUB or "\x00" in sub:
            raise ValueError(f"sub must be a string of 1 to {MAX_SUB} characters, without NUL")
        info = "null"
        if "info" in claims:
            try:
                raw = orjson.dumps(claims["info"])
            except orjson.JSONEncodeError as exc:  # (an integer past 64 bits)
                raise ValueError(f"info cannot be stored: {exc}") from None
            if len(raw) > MAX_INFO:
                raise ValueError(f"info is over {MAX_INFO} bytes as JSON")
            info = raw.decode()
        return cls(sub, info)

    def announcement(self) -> str:
        """The data of its `join` and `leave` events: `{"sub": …, "info": …}`."""
        return f'{{"sub":{orjson.dumps(self.sub).decode()},"info":{self.info}}}'


@dataclass(frozen=True, slots=True)
class Attendee:
    """One identified subscriber of a channel: its `info` (JSON text) and how many
    connections it has open (on every node)."""

    sub: str
    info: str
    connections: int


@dataclass(frozen=True, slots=True)
class AttendeePage:
    """A page of a channel's identified subscribers, by `sub`; `next` is the `after` of
    the next page (None: this is the last)."""

    attendees: tuple[Attendee, ...]
    next: str | None
