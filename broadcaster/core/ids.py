"""The id scheme: an event id is `<ms>-<seq>`, a position in the global publish order."""

from __future__ import annotations

from typing import NamedTuple


class EventId(NamedTuple):
    """A position in the global publish order.

    A named tuple, not a dataclass: ids are compared and made on every message's way and
    in every replay's merge, and tuples do both in C.
    """

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str | None) -> EventId | None:
        """The id in `text`, or None when it is missing or malformed."""
        if not text:
            return None
        # `<1-15 ASCII digits>-<1-18 ASCII digits>`, checked without a regex: the hot path
        # parses every live message's id.
        ms, _, seq = text.partition("-")
        if not (0 < len(ms) <= 15 and 0 < len(seq) <= 18 and text.isascii()):
            return None
        return cls(int(ms), int(seq)) if ms.isdigit() and seq.isdigit() else None

    def __str__(self) -> str:  # the wire form, `<ms>-<seq>`
        return f"{self.ms}-{self.seq}"


ORIGIN = EventId(0, 0)
"""The position before the first id of a sequence: where a stream that joined a group
with nothing published yet stands (a resume from it replays everything retained)."""
