"""The replay of a stream whose channels span several groups: one replay per group,
merged, each event carrying the stream's composite id (`composite.py`).

A resume parses the client's id into a position per group (`core/positions.py`); an id
of another form is told `malformed`, one made for other groups `unknown`, and the
stream starts at each group's head. Each group's replay is read as on a single Redis
(history and fence on its own shard), whole: a stream of several groups holds at most
MAX_REPLAY_BYTES of each while it is sent. Events of different groups are merged by id
(their publish times, as ids begin with them); each group's stay in their order.

Before a group's first replayed event the stream stands just before it, so a client cut
off in the middle of its replay comes back for the rest; a group it got nothing from
stands at the head its replay read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from broadcaster.brokers.protocol import Broker
from broadcaster.core.history import Start
from broadcaster.core.ids import ORIGIN, EventId
from broadcaster.core.message import Message
from broadcaster.core.positions import PositionError, Positions
from broadcaster.core.replay import Placed, Replay, notice
from broadcaster.core.sse import encode_position
from broadcaster.delivery.composite import composed, just_before

Merged = tuple[EventId, int, str, str, Message]  # position, notice?, group, channel, message


@dataclass(frozen=True, slots=True)
class ComposedReplay:
    """What a stream of several groups is sent before it goes live, and where it then
    stands in each group."""

    body: bytes
    events: int
    positions: Positions

    async def pieces(self) -> AsyncIterator[tuple[bytes, int]]:
        """The replay's bytes and how many events they hold (one piece)."""
        yield self.body, self.events


async def replay_across(
    broker: Broker, groups: Mapping[str, Sequence[str]], start: Start
) -> ComposedReplay:
    """The replay of `groups` (each group's channels) from `start`. BrokerUnavailable if
    a group's history is out of reach (the stream needs a position in every group)."""
    names = sorted(groups)
    resets: dict[str, list[str]] = {}
    starts = dict.fromkeys(names, start)
    parsed: Positions | None = None
    if start.after is not None:
        try:
            parsed = Positions.parse(start.after, names)
            starts = {group: Start.resume(str(parsed.of(group))) for group in names}
        except PositionError as exc:
            resets[exc.reason] = [channel for group in groups.values() for channel in group]
            starts = dict.fromkeys(names, Start(tail=0))
    replays = await asyncio.gather(*(broker.replay(groups[g], starts[g]) for g in names))
    merged: list[Merged] = []
    heads: dict[str, EventId] = {}
    for group, replayed in zip(names, replays, strict=True):
        for reason, channels in replayed.resets.items():
            resets.setdefault(reason, []).extend(channels)
        merged += [(p, m.id is None, group, c, m) for p, c, m in await _whole(replayed)]
        heads[group] = replayed.head or ORIGIN
    merged.sort(key=lambda item: item[:3])
    if start.after is None and start.tail is not None:
        merged = merged[max(0, len(merged) - start.tail) :]
    at = dict(heads)
    if parsed is not None:
        at = {group: parsed.of(group) for group in names}
    else:
        for position, _, group, _, _ in reversed(merged):
            at[group] = just_before(position)
    return _composed(Positions.start(at), merged, resets, heads)


def _composed(
    positions: Positions,
    merged: list[Merged],
    resets: dict[str, list[str]],
    heads: dict[str, EventId],
) -> ComposedReplay:
    frames = [notice(channels, reason).frame() for reason, channels in resets.items()]
    notified = bool(resets)
    for position, is_notice, group, _, message in merged:
        if is_notice:
            frames.append(message.frame())
            notified = True
        else:
            positions = positions.moved(group, position)
            frames.append(composed(message, positions))
    if notified:
        # As on one group: an `id:` line alone moves the client to every head, so its next
        # reconnect does not reset again.
        positions = Positions.start(heads)
        frames.append(encode_position(str(positions)))
    return ComposedReplay(b"".join(frames), len(merged), positions)


async def _whole(replayed: Replay) -> list[Placed]:
    """Every item of a group's replay, its later pages and notices included, in order."""
    items = list(replayed.items)
    if replayed.more is not None:
        async for page in replayed.more():
            items += page
    items += replayed.notices
    items.sort(key=lambda item: (item[0], item[2].id is None))
    return items
