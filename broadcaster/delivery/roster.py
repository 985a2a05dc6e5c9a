"""The roster: which identified subscribers (a JWT `sub`) each channel has on this node."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from broadcaster.core.identity import Attendee, Identity


@dataclass(slots=True)
class _Seat:
    connections: int
    info: str  # (the first connection's)


class Roster:
    """Each channel's identified subscribers on this node, with their connections.

    The hub tells it of every identified stream that joins or leaves (anonymous ones are
    only counted, by the hub); it notes each (channel, sub) that changed for the presence
    tracker (`changed`). A join or a leave is a dict update and a set insertion: no I/O.
    """

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, _Seat]] = {}
        self._changed: set[tuple[str, str]] | None = None  # once asked (`track_changes`)

    def track_changes(self) -> None:
        """From now on, note each (channel, sub) that changes (see `changed`)."""
        if self._changed is None:
            self._changed = set()

    def arrive(self, channels: Sequence[str], identity: Identity) -> None:
        """A stream of `identity` joined `channels`."""
        sub = identity.sub
        for channel in channels:
            seats = self._channels.setdefault(channel, {})
            seat = seats.get(sub)
            if seat is None:
                seats[sub] = _Seat(1, identity.info)
            else:
                seat.connections += 1
            if self._changed is not None:
                self._changed.add((channel, sub))

    def depart(self, channels: Sequence[str], identity: Identity) -> None:
        """A stream of `identity` that joined `channels` left."""
        sub = identity.sub
        for channel in channels:
            seats = self._channels.get(channel)
            seat = None if seats is None else seats.get(sub)
            if seats is None or seat is None:
                continue
            seat.connections -= 1
            if not seat.connections:
                del seats[sub]
                if not seats:
                    del self._channels[channel]
            if self._changed is not None:
                self._changed.add((channel, sub))

    def seat(self, channel: str, sub: str) -> Attendee | None:
        """`sub` on `channel` here, or None when it has no connection to it."""
        seat = self._channels.get(channel, {}).get(sub)
        return None if seat is None else Attendee(sub, seat.info, seat.connections)

    def attendees(self, channel: str) -> list[Attendee]:
        """The identified subscribers of `channel` here, by `sub`."""
        seats = self._channels.get(channel, {})
        return [Attendee(sub, seats[sub].info, seats[sub].connections) for sub in sorted(seats)]

    def seated(self) -> Iterable[tuple[str, str]]:
        """Every (channel, sub) with a connection here."""
        return [(channel, sub) for channel, seats in self._channels.items() for sub in seats]

    def changed(self) -> set[tuple[str, str]]:
        """The (channel, sub) pairs that changed since the last call, taken."""
        changed = self._changed
        if changed is None:
            return set()
        self._changed = set()
        return changed
