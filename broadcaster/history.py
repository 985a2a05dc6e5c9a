"""The resume decision shared by both brokers: replay what a client missed, or say why not.

Ids (`ids.py`) are `<ms>-<seq>`: `seq` is one sequence for every channel, assigned in the
atomic publish step, and `ms` a publish clock that never goes back. Ids therefore never
tie or cross between channels, and the same string is the entry id in the channel's
history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from .ids import EventId
from .message import Message
from .sse import encode_position

EARLIEST = "earliest"
"""The Last-Event-ID (or `lastEventId`) that asks for everything still retained."""


@dataclass(frozen=True, slots=True)
class Start:
    """Where a new stream begins in its channels' history.

    Just after `after` (a client's Last-Event-ID: the only start that can `reset`), or,
    with `after` None, at the newest `tail` messages of all the channels together, or at
    the earliest retained message when `tail` is None too.
    """

    after: str | None = None
    tail: int | None = None

    @classmethod
    def resume(cls, after: str) -> Start:
        """After the id `after`; `earliest` asks for everything retained."""
        return cls() if after == EARLIEST else cls(after=after)


@dataclass(frozen=True, slots=True)
class Entry:
    """One retained message of a channel, with the id of the one before it."""

    id: EventId
    prev: EventId | None
    message: Message


@dataclass(frozen=True, slots=True)
class Head:
    """Where the sequence stands: its newest id and when it began (a wipe starts anew)."""

    last: EventId
    epoch_ms: int


@dataclass(frozen=True, slots=True)
class ChannelHistory:
    """What a broker read of one channel: whether it has history, and entries after a point."""

    exists: bool
    entries: Sequence[Entry]


@dataclass(frozen=True, slots=True)
class Gap:
    """Where a failover may have lost messages: ids between `after` and `before` may have
    been published on the old primary and never reached the new one. `seen` is the newest
    of them a node delivered (`after` when no node reported one)."""

    after: EventId
    before: EventId
    seen: EventId

    @classmethod
    def parse(cls, text: str) -> Gap | None:
        """A gap as the function library stores it, `<after>|<before>|<seen>`."""
        ids = [EventId.parse(part) for part in text.split("|")]
        if len(ids) != 3 or None in ids:
            return None
        return cls(*ids)  # type: ignore[arg-type]

    def hides(self, position: EventId) -> bool:
        """Whether a client at `position` may have missed a message lost here: it holds a
        lost id itself, or is behind and a lost message was delivered to somebody."""
        if position >= self.before:
            return False
        return position > self.after or self.seen > self.after

    def notice(self, channels: list[str]) -> Message:
        """The `reset` event a client gets where the lost messages would have been."""
        body = {"channels": channels, "reason": "failover"}
        return Message(orjson.dumps(body).decode(), "reset")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One atomic read of the history of several channels after an id."""

    head: Head | None
    now_ms: int
    ttl_ms: int
    channels: dict[str, ChannelHistory]
    gaps: tuple[Gap, ...] = ()


Item = tuple[EventId, str, Message]  # where in the publish order, on which channel, what


@dataclass(slots=True)
class Replay:
    """What a resuming client gets: missed messages in publish order, and resets by reason.

    A `failover` reset stands among the messages, where the lost ones would have been.
    """

    head: EventId | None
    items: list[Item] = field(default_factory=list)
    resets: dict[str, list[str]] = field(default_factory=dict)
    caught_up: bool = True
    """Whether every live message up to `head` had reached the node when the replay was
    read. If not, some may still be delivered: the stream drops them itself."""
    _frames: bytes | None = None
    _bounded: tuple[int, Replay] | None = None

    @property
    def messages(self) -> list[tuple[str, Message]]:
        """The replayed messages (and inline notices), with their channels, in order."""
        return [(channel, message) for _, channel, message in self.items]

    def frames(self) -> bytes:
        """Resets first, then the missed messages in publish order, then the position.

        After a reset, an `id:` line alone moves the client's Last-Event-ID to the head
        without firing an event, so the next reconnect does not reset again. Built once
        and shared by every client that got this replay.
        """
        if self._frames is None:
            parts = [notice.frame() for notice in self.reset_messages()]
            parts += [message.frame() for _, _, message in self.items]
            notified = any(message.id is None for _, _, message in self.items)
            if (self.resets or notified) and self.head is not None:
                parts.append(encode_position(str(self.head)))
            self._frames = b"".join(parts)
        return self._frames

    def bounded(self, limit: int) -> Replay:
        """This replay within `limit` bytes of messages: the newest of them, with a
        `trimmed` reset for every channel that lost older ones (a 200-byte request must
        not fetch megabytes). Made once, and shared like the frames."""
        if self._bounded is not None and self._bounded[0] == limit:
            return self._bounded[1]
        size, keep = 0, len(self.items)
        while keep and size + len(self.items[keep - 1][2].frame()) <= limit:
            keep -= 1
            size += len(self.items[keep][2].frame())
        result = self
        if keep:
            resets = {reason: list(channels) for reason, channels in self.resets.items()}
            trimmed = resets.setdefault("trimmed", [])
            for _, channel, _ in self.items[:keep]:
                if channel and channel not in trimmed:
                    trimmed.append(channel)
            result = Replay(self.head, self.items[keep:], resets, self.caught_up)
        self._bounded = (limit, result)
        return result

    def reset_messages(self) -> list[Message]:
        """One `reset` event per reason, naming its channels."""
        return [
            Message(orjson.dumps({"channels": channels, "reason": reason}).decode(), "reset")
            for reason, channels in self.resets.items()
        ]


def begin(start: Start, snapshot: Snapshot) -> Replay:
    """What a new stream replays: what it missed after its id (or resets), or the
    retained messages of all its channels merged in id order (the newest `tail` of them)."""
    if start.after is not None:
        return replay(start.after, snapshot)
    merged = sorted(
        (
            (entry.id, channel, entry.message)
            for channel, history in snapshot.channels.items()
            for entry in history.entries
        ),
        key=lambda item: item[0],
    )
    if start.tail is not None:
        merged = merged[max(0, len(merged) - start.tail) :]
    head = snapshot.head.last if snapshot.head else None
    return Replay(head, merged)


def replay(after: str, snapshot: Snapshot) -> Replay:
    """Decide, channel by channel, between replaying what was missed and a reset.

    Across a failover that may have lost messages after the client's id, the retained
    ones are still replayed, with a `failover` reset where the lost ones would have been.
    """
    result = Replay(snapshot.head.last if snapshot.head else None)
    position = EventId.parse(after)
    hiding = [] if position is None else [gap for gap in snapshot.gaps if gap.hides(position)]
    merged: list[tuple[EventId, int, str, Message]] = []
    for channel, history in snapshot.channels.items():
        reason = _lost(position, snapshot, history, inside_gap=bool(hiding))
        if reason is not None:
            result.resets.setdefault(reason, []).append(channel)
        else:
            merged += [(entry.id, 0, channel, entry.message) for entry in history.entries]
    replayed = [channel for channel in snapshot.channels if not _in(result.resets, channel)]
    if replayed:
        merged += [(gap.after, 1, "", gap.notice(replayed)) for gap in hiding]
    merged.sort(key=lambda item: item[:2])
    result.items = [(position, channel, message) for position, _, channel, message in merged]
    return result


def _in(resets: dict[str, list[str]], channel: str) -> bool:
    return any(channel in channels for channels in resets.values())


def _lost(
    position: EventId | None, snapshot: Snapshot, history: ChannelHistory, *, inside_gap: bool
) -> str | None:
    if position is None:
        return "malformed"
    head = snapshot.head
    ahead = position > head.last if head is not None else True
    if head is None or (ahead and not inside_gap) or position.ms < head.epoch_ms:
        return "unknown"  # not an id of this sequence: Redis was wiped, or it is made up
    if history.entries:
        first = history.entries[0]
        # The chain tells whether anything between the client's id and `first` is gone.
        return "trimmed" if first.prev is not None and first.prev > position else None
    if not history.exists and snapshot.ttl_ms and snapshot.now_ms - position.ms > snapshot.ttl_ms:
        # Idle longer than the TTL: messages after the client's id may have expired.
        return "expired"
    return None
