"""The ids of a stream whose channels span several groups (on a Redis Cluster).

Such a stream's Last-Event-ID holds its position in each group (`core/positions.py`),
so each of its events carries an id of its own: the frame shared by the channel's other
streams, with this stream's `id:` line in place of the message's. That costs one
concatenation per event for these streams only; streams within one group keep sharing
frames. Each group's messages come in order, and one the stream already has (by its
group's position) is dropped, so a message delivered live after the replay that held
it is never sent twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.positions import Positions

_ID = b"id: "


class Composite:
    """A stream's position in each of its groups, and its frames with composite ids."""

    __slots__ = ("_early", "group_of", "positions")

    def __init__(self, group_of: Mapping[str, str]) -> None:
        self.group_of = dict(group_of)
        """Each channel's group."""
        self.positions: Positions | None = None
        """Where the stream stands, once its replay (or its heads) was read."""
        self._early: list[tuple[str, Message]] = []

    @classmethod
    def of(cls, channels: Sequence[str], group: Mapping[str, str]) -> Composite | None:
        """A composite for `channels` whose groups `group` gives, if they span several."""
        return cls(group) if len(set(group.values())) > 1 else None

    @property
    def groups(self) -> dict[str, list[str]]:
        """The channels of each group, in the stream's order."""
        groups: dict[str, list[str]] = {}
        for channel, group in self.group_of.items():
            groups.setdefault(group, []).append(channel)
        return groups

    @property
    def holding(self) -> bool:
        """Whether live messages wait for the stream's positions."""
        return bool(self._early)

    def hold(self, channel: str, message: Message) -> None:
        """A live message that came before the stream's positions are known."""
        self._early.append((channel, message))

    def begin(self, positions: Positions) -> list[bytes]:
        """Start at `positions`; the frames of the held messages that are newer."""
        self.positions = positions
        early, self._early = self._early, []
        frames = (self.frame(channel, message) for channel, message in early)
        return [frame for frame in frames if frame is not None]

    def frame(self, channel: str, message: Message) -> bytes | None:
        """`message`'s frame with the stream's id once it moved on, or None if the stream
        has it already. (Raw text has no id: its frame is the shared one.)"""
        position = message.position()
        if position is None or self.positions is None:
            return message.frame()
        group = self.group_of[channel]
        if position <= self.positions.of(group):
            return None
        self.positions = self.positions.moved(group, position)
        return composed(message, self.positions)


def composed(message: Message, positions: Positions) -> bytes:
    """`message`'s frame, its `id:` line holding `positions`."""
    frame = message.frame()
    own = len(_ID) + len(message.id or "") + 1
    return _ID + str(positions).encode() + frame[own - 1 :]


def just_before(position: EventId) -> EventId:
    """A position whose next message is `position`'s: ids never tie within a group."""
    if position.seq:
        return EventId(position.ms, position.seq - 1)
    return EventId(position.ms - 1, 0) if position.ms else position
