"""Replays read from Redis a page at a time (`FCALL_RO sse_replay_page`, `replay.lua`):
the byte bound is applied where the entries are, and a node holds one page per reader."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.core.history import Entry
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.replay import PAGE_BYTES, Page, notice

FUNCTION = "sse_replay_page"
FROM_OLDEST = "-"


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One page of `channels` after their `cursors` (ids, or FROM_OLDEST) up to `upper`.

    A replay's first page also bounds the whole replay: its newest `budget` bytes (0: no
    bound) and `tail` entries (-1: no bound).
    """

    channels: tuple[str, ...]
    cursors: tuple[str, ...]
    upper: str = "+"
    budget: int = 0
    tail: int = -1

    def args(self, space: KeySpace) -> list[str | int]:
        """The FCALL_RO arguments after the function's name and key count."""
        keys = [space.history(channel) for channel in self.channels]
        return [*keys, self.upper, PAGE_BYTES, self.budget, self.tail, *self.cursors]


@dataclass(frozen=True, slots=True)
class PageRead:
    """What one call read: channels whose chain broke after their cursor (not read),
    channels that lost older entries to the budget, the entries in id order, and whether
    more remain."""

    broken: tuple[str, ...]
    cut: tuple[str, ...]
    entries: list[tuple[str, Entry]]
    more: bool
    cursors: dict[str, str]
    """Where each channel that was read goes on from."""

    @classmethod
    def parse(cls, request: PageRequest, reply: Sequence[Any]) -> PageRead:
        """Decode the function's reply to `request`."""
        broken_at, cut_at, start, flat, more = reply
        named = request.channels
        broken = tuple(named[n - 1] for n in sorted(broken_at))
        start_id = EventId.parse(_text(start))
        cursors = {}
        for channel, cursor in zip(named, request.cursors, strict=True):
            if channel not in broken:
                at = EventId.parse(cursor)
                moved = start_id is not None and (at is None or start_id > at)
                cursors[channel] = str(start_id) if moved else cursor
        entries = []
        for n in range(0, len(flat), 5):
            channel = named[flat[n] - 1]
            entry = entry_of(*(_text(value) for value in flat[n + 1 : n + 5]))
            entries.append((channel, entry))
            cursors[channel] = str(entry.id)
        cut = tuple(named[n - 1] for n in sorted(cut_at))
        return cls(broken, cut, entries, bool(more), cursors)


Call = Callable[[PageRequest], Awaitable[PageRead]]


@dataclass(frozen=True, slots=True)
class RedisPages:
    """The pages of a replay after its first (a `More`): each call reads with a cursor of
    its own, up to the replay's head; a channel whose older entries were trimmed since
    the page before is told `trimmed` there and read no further."""

    call: Call
    cursors: dict[str, str]
    head: EventId

    async def __call__(self) -> AsyncIterator[Page]:
        cursors = dict(self.cursors)
        while cursors:
            request = PageRequest(tuple(cursors), tuple(cursors.values()), str(self.head))
            read = await self.call(request)
            page: Page = []
            if read.broken:
                where = min(EventId.parse(cursors[c]) or self.head for c in read.broken)
                page.append((where, "", notice(list(read.broken), "trimmed")))
            page += [(entry.id, channel, entry.message) for channel, entry in read.entries]
            if page:
                yield page
            if not read.more:
                return
            cursors = read.cursors


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def entry_of(id_: str, prev: str, event: str, data: str, *, closes: bool = False) -> Entry:
    """A history entry from its stream fields (empty strings for absent ones); `closes`
    if it has the closing mark (a replay's pages do not carry it: a client gets the
    event either way, and what closes is the hub's to know)."""
    position = EventId.parse(id_)
    if position is None:
        raise ValueError(f"history entry {id_!r} was not written by sse_publish")
    message = Message(data, event or None, id_, prev or None, position.ms, closes)
    return Entry(position, EventId.parse(prev), message)
