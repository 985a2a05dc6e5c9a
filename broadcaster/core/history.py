"""The resume decision shared by both brokers: replay what a client missed, or say why not.

Ids (`ids.py`) are `<ms>-<seq>`: `seq` is one sequence for every channel, assigned in the
atomic publish step, and `ms` a publish clock that never goes back. Ids therefore never
tie or cross between channels, and the same string is the entry id in the channel's
history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broadcaster.core.ids import ORIGIN, EventId
from broadcaster.core.message import Message
from broadcaster.core.replay import More, Replay, notice

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
    """What a broker read of one channel: whether it has history, entries after a point
    (all of them, or those in the replay's first page), and whether the entry before the
    first of them was trimmed although newer than that point (`broken`)."""

    exists: bool
    entries: Sequence[Entry]
    broken: bool = False

    @classmethod
    def after(
        cls, position: EventId | None, exists: bool, entries: Sequence[Entry]
    ) -> ChannelHistory:
        """The history of a channel read whole after `position`."""
        first = entries[0].prev if entries else None
        return cls(exists, entries, first is not None and position is not None and first > position)


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
        return notice(channels, "failover")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One atomic read of the history of several channels after an id."""

    head: Head | None
    now_ms: int
    ttl_ms: int
    channels: dict[str, ChannelHistory]
    gaps: tuple[Gap, ...] = ()
    cut: tuple[str, ...] = ()
    """Channels that lost older entries to the replay's byte bound (told `trimmed`)."""
    more: More | None = None
    """The pages after the entries read, when a broker pages its reads."""


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
    return _bounded(Replay(head, merged, more=snapshot.more), snapshot)


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
    if not replayed:
        return result
    result.more = snapshot.more
    # With later pages, a notice past this page waits for its place among them.
    last = max((item[0] for item in merged), default=None) if result.more else None
    for gap in hiding:
        if last is None or gap.after <= last:
            merged.append((gap.after, 1, "", gap.notice(replayed)))
        else:
            result.notices.append((gap.after, "", gap.notice(replayed)))
    merged.sort(key=lambda item: item[:2])
    result.items = [(position, channel, message) for position, _, channel, message in merged]
    return _bounded(result, snapshot)


def _bounded(result: Replay, snapshot: Snapshot) -> Replay:
    """Tell the channels that lost older entries to the replay's byte bound."""
    for channel in snapshot.cut:
        if not _in(result.resets, channel):
            result.resets.setdefault("trimmed", []).append(channel)
    return result


def _in(resets: dict[str, list[str]], channel: str) -> bool:
    return any(channel in channels for channels in resets.values())


def _lost(
    position: EventId | None, snapshot: Snapshot, history: ChannelHistory, *, inside_gap: bool
) -> str | None:
    if position is None:
        return "malformed"
    head = snapshot.head
    if position == ORIGIN:
        # Before the first id (a stream that joined a group with nothing published yet):
        # all that is retained is new to it; it stands at the sequence's start in time.
        if head is None:
            return None
        since = head.epoch_ms
    else:
        ahead = position > head.last if head is not None else True
        if head is None or (ahead and not inside_gap) or position.ms < head.epoch_ms:
            return "unknown"  # not an id of this sequence: Redis was wiped, or it is made up
        since = position.ms
    if history.broken:
        # The chain tells that something between the client's id and what is left is gone.
        return "trimmed"
    if not history.exists and snapshot.ttl_ms and snapshot.now_ms - since > snapshot.ttl_ms:
        # Idle longer than the TTL: messages after the client's id may have expired.
        return "expired"
    return None
