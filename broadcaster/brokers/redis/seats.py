"""A node process's seats in each channel's set of identified subscribers (the `who`
sorted set of `presence.lua`), and reading that set a page at a time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis.asyncio as aioredis

from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.core.identity import Attendee, AttendeePage, Identity

SEP = "\x00"
ROUNDS = 8
"""Reads of a `who` set at most for one page (a page skips the seats of dead processes)."""
PRESENCE = "sse_presence"
GONE = "sse_presence_gone"

Alive = Callable[[set[bytes]], Awaitable[set[bytes]]]


class Seats:
    """This process's seats in each channel's `who` set: a member per (channel, sub),
    "<sub>\\0<process>\\0<connections>\\0<info>", the `FCALL`s that move them, and the
    data of each one's `leave`."""

    def __init__(
        self,
        keys: KeySpace,
        process: str,
        announces: Callable[[str], bool] | None,
        expire_s: int,
    ) -> None:
        self._keys = keys
        self._process = process
        self._announces = announces
        self._expire_s = expire_s
        self._publish = "SPUBLISH" if keys.clustered else "PUBLISH"
        # (channel, sub) -> the data of its `leave`, for each seat written
        self._data: dict[tuple[str, str], str] = {}

    def calls(self, seats: Mapping[tuple[str, str], Attendee | None]) -> list[tuple[Any, ...]]:
        """The `FCALL sse_presence` of each channel whose seats change (one per channel)."""
        changes: dict[str, list[str]] = {}
        for (channel, sub), attendee in seats.items():
            if attendee is None:
                new = ""
                data = self._data.get((channel, sub)) or Identity(sub).announcement()
            else:
                new = SEP.join((sub, self._process, str(attendee.connections), attendee.info))
                data = Identity(sub, attendee.info).announcement()
            changes.setdefault(channel, []).extend((sub, new, data))
        return [
            (PRESENCE, 1, *self._head(channel), self._expire_s, self._process, *triples)
            for channel, triples in changes.items()
        ]

    def written(self, seats: Mapping[tuple[str, str], Attendee | None]) -> None:
        """`seats` are in the store now."""
        for (channel, sub), attendee in seats.items():
            if attendee is None:
                self._data.pop((channel, sub), None)
            else:
                self._data[(channel, sub)] = Identity(sub, attendee.info).announcement()

    def all_gone(self) -> dict[tuple[str, str], Attendee | None]:
        """Every seat this process holds, to be removed."""
        return dict.fromkeys(self._data)

    def gone(self, channel: str, process: str) -> tuple[Any, ...]:
        """The `FCALL sse_presence_gone` that removes a dead process's seats of `channel`."""
        return (GONE, 1, *self._head(channel), process)

    def _head(self, channel: str) -> tuple[str, str, str, str]:
        """The key, pub/sub channel, publish command and announce flag of `channel`."""
        announce = "1" if self._announces is not None and self._announces(channel) else "0"
        return self._keys.who(channel), self._keys.pubsub(channel)[1], self._publish, announce

    async def page(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        channel: str,
        after: str | None,
        limit: int,
        alive: Alive,
    ) -> AttendeePage:
        """Up to `limit` identified subscribers of `channel` after the sub `after`, their
        seats on live processes summed; the page's `next` names its last sub when more
        may follow. Members sort by sub, then process: a sub's seats are side by side."""
        key = self._keys.who(channel)
        start = b"-" if after is None else b"(" + after.encode() + b"\x00\xff"
        chunk = max(2 * limit, 500)
        found: dict[str, list[Any]] = {}  # sub -> [connections, info], in order
        verdicts: dict[bytes, bool] = {}
        last_sub = None
        exhausted = False
        for _ in range(ROUNDS):
            members: list[bytes] = await client.zrange(  # type: ignore[assignment]
                key, start, b"+", bylex=True, offset=0, num=chunk
            )
            parts = [member.split(b"\x00", 3) for member in members]
            unknown = {part[1] for part in parts if part[1] not in verdicts}
            live = await alive(unknown)
            verdicts.update((process, process in live) for process in unknown)
            for sub_bytes, process, connections, info in parts:
                last_sub = sub_bytes.decode()
                if verdicts[process]:
                    seat = found.setdefault(last_sub, [0, info.decode()])
                    seat[0] += int(connections)
            if len(members) < chunk:
                exhausted = True
                break
            start = b"(" + members[-1]
            if len(found) > limit:
                break
        subs = list(found)
        if not exhausted and subs and subs[-1] == last_sub:
            subs.pop()  # (its seats may go on past what was read)
        page = subs[:limit]
        more = len(subs) > limit or not exhausted
        attendees = tuple(Attendee(sub, found[sub][1], found[sub][0]) for sub in page)
        cursor = page[-1] if page else last_sub
        return AttendeePage(attendees, cursor if more else None)
