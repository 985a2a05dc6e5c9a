"""What a resuming client is sent before it goes live: resets, then missed messages, a
page at a time, so a node holds one page per client reading a long replay, never all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import orjson

from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.sse import encode_position

PAGE_BYTES = 1 << 17
"""About how many bytes of frames a replay reads and holds at a time."""

Placed = tuple[EventId, str, Message]  # where in the publish order, on which channel, what
Page = list[Placed]
More = Callable[[], AsyncIterator[Page]]
"""A replay's pages after its first, read as the client takes them: each call starts a
cursor of its own (a replay is shared by the clients that asked the same)."""


def notice(channels: list[str], reason: str) -> Message:
    """The `reset` event telling a client that it may have missed messages of `channels`."""
    return Message(orjson.dumps({"channels": channels, "reason": reason}).decode(), "reset")


@dataclass(slots=True)
class Replay:
    """What a resuming client gets: resets by reason, then missed messages in publish
    order (`items` is the first page; `more` reads the rest), then its position.

    A notice (an item without id: a `failover` reset, or a `trimmed` one found while
    paging) stands among the messages, where the lost ones would have been.
    """

    head: EventId | None
    items: Page = field(default_factory=list)
    resets: dict[str, list[str]] = field(default_factory=dict)
    caught_up: bool = True
    """Whether every live message up to `head` had reached the node when the replay was
    read. If not, some may still be delivered: the stream drops them itself."""
    more: More | None = None
    notices: Page = field(default_factory=list)
    """Failover notices that belong after `items`, placed among the later pages."""
    _frames: bytes | None = None

    @property
    def messages(self) -> list[tuple[str, Message]]:
        """The first page's messages (and inline notices), with their channels, in order."""
        return [(channel, message) for _, channel, message in self.items]

    def frames(self) -> bytes:
        """Resets first, then the first page; then, if that is all, the position.

        After a reset, an `id:` line alone moves the client's Last-Event-ID to the head
        without firing an event, so the next reconnect does not reset again. Built once
        and shared by every client that got this replay.
        """
        if self._frames is None:
            parts = [message.frame() for message in self.reset_messages()]
            parts += [message.frame() for _, _, message in self.items]
            if self.more is None:
                parts += [message.frame() for _, _, message in self.notices]
                parts.append(self._position(_notified(self.items) or bool(self.notices)))
            self._frames = b"".join(parts)
        return self._frames

    async def pieces(self) -> AsyncIterator[tuple[bytes, int]]:
        """The replay's bytes and how many events each piece holds: the shared first
        part, then each later page as it is read (the caller writes each before asking
        for the next), then the position."""
        yield self.frames(), len(self.items)
        if self.more is None:
            return
        notices = list(self.notices)
        notified = _notified(self.items) or bool(notices)
        async for page in self.more():
            placed: Page = []
            for item in page:
                while notices and notices[0][0] < item[0]:
                    placed.append(notices.pop(0))
                placed.append(item)
            notified = notified or _notified(page)
            yield b"".join(message.frame() for _, _, message in placed), len(placed)
        last = b"".join(message.frame() for _, _, message in notices) + self._position(notified)
        if last:
            yield last, len(notices)

    def bounded(self, limit: int, channels: Sequence[str]) -> Replay:
        """This whole replay of `channels` within `limit` bytes of messages: the newest of
        them, with a `trimmed` reset for every channel that lost older ones (a 200-byte
        request must not send megabytes)."""
        size, keep = 0, len(self.items)
        while keep and size + len(self.items[keep - 1][2].frame()) <= limit:
            keep -= 1
            size += len(self.items[keep][2].frame())
        if not keep:
            return self
        resets = {reason: list(channels) for reason, channels in self.resets.items()}
        lost = {channel for _, channel, _ in self.items[:keep]}
        trimmed = resets.setdefault("trimmed", [])
        trimmed += [channel for channel in channels if channel in lost and channel not in trimmed]
        return Replay(self.head, self.items[keep:], resets, self.caught_up)

    def paged(self, page_bytes: int = PAGE_BYTES) -> Replay:
        """This whole replay (held in memory anyway) as a first page and later ones, so
        that no client's replay is joined into one piece. Pages are cut as they are read."""
        first = next(_pages(self.items, page_bytes))
        if len(first) == len(self.items):
            return self
        items = self.items

        async def more() -> AsyncIterator[Page]:
            for page in _pages(islice(items, len(first), None), page_bytes):
                if page:
                    yield page

        return Replay(self.head, first, self.resets, self.caught_up, more)

    def reset_messages(self) -> list[Message]:
        """One `reset` event per reason, naming its channels."""
        return [notice(channels, reason) for reason, channels in self.resets.items()]

    def _position(self, notified: bool) -> bytes:
        if (self.resets or notified) and self.head is not None:
            return encode_position(str(self.head))
        return b""


def _notified(items: Page) -> bool:
    return any(message.id is None for _, _, message in items)


def _pages(items: Iterable[Placed], page_bytes: int) -> Iterator[Page]:
    page: Page = []
    size = 0
    for item in items:
        page.append(item)
        size += len(item[2].frame())
        if size >= page_bytes:
            yield page
            page, size = [], 0
    yield page  # (the last, maybe empty)
