"""One Last-Event-ID for a connection whose channels span several groups (sequences).

A group is a set of channels that share one sequence (`core/channels.group_of`; on a
single Redis, every channel is in one group). A connection within one group sends and
receives a plain id, `<ms>-<seq>`. One that spans groups gets, on every event, an id
that holds each group's position: the positions in the order of its groups sorted by
name, joined by `_`, then `~` and a check of those names (8 hex digits of their CRC-32),
as in `1796445362374-3_1796445362100-1~3f9a1c22`. The check tells an id made for
another set of groups (a client that changed its channels) from one of this set: it is
answered `unknown`, never misread. Its length grows by one position per group, so it
is bounded by the channels a connection may follow.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from broadcaster.core.ids import EventId

SEPARATOR = "_"
CHECK = "~"


class PositionError(ValueError):
    """A Last-Event-ID that gives no position: `reason` is the reset's (`malformed`, for
    an id that is not of this form; `unknown`, for one made for other groups)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_of(groups: Iterable[str]) -> str:
    """The check of a set of groups: 8 hex digits of the CRC-32 of their sorted names."""
    return f"{zlib.crc32(chr(10).join(sorted(groups)).encode()):08x}"


@dataclass(frozen=True, slots=True)
class Positions:
    """A connection's position in each of its groups (sorted by name)."""

    groups: tuple[str, ...]
    at: tuple[EventId, ...]

    @classmethod
    def start(cls, at: dict[str, EventId]) -> Positions:
        """The positions `at` gives, group by group."""
        groups = tuple(sorted(at))
        return cls(groups, tuple(at[group] for group in groups))

    @classmethod
    def parse(cls, text: str, groups: Iterable[str]) -> Positions:
        """The positions a Last-Event-ID `text` holds for `groups`; raises PositionError."""
        names = tuple(sorted(set(groups)))
        if len(names) == 1:
            position = EventId.parse(text)
            if position is None:
                raise PositionError("malformed", "not an id of the form <ms>-<seq>")
            return cls(names, (position,))
        body, mark, check = text.rpartition(CHECK)
        parts = body.split(SEPARATOR) if mark else []
        at = [EventId.parse(part) for part in parts]
        if not mark or not parts or None in at:
            raise PositionError("malformed", "not an id of the form <ms>-<seq>_...~<check>")
        if len(at) != len(names) or check != check_of(names):
            raise PositionError("unknown", "an id made for another set of channels")
        return cls(names, tuple(p for p in at if p is not None))

    def __str__(self) -> str:
        """The wire form: a plain id for one group, else the composite one."""
        if len(self.at) == 1:
            return str(self.at[0])
        body = SEPARATOR.join(str(position) for position in self.at)
        return f"{body}{CHECK}{check_of(self.groups)}"

    def of(self, group: str) -> EventId:
        """The position in `group`."""
        return self.at[self.groups.index(group)]

    def moved(self, group: str, position: EventId) -> Positions:
        """These positions, with `group`'s at `position`."""
        index = self.groups.index(group)
        return Positions(self.groups, (*self.at[:index], position, *self.at[index + 1 :]))
