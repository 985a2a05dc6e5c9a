"""Shared replay reads: in a reconnect storm, clients asking for the same range within a
moment share one history read, one fence and one encoded replay."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from broadcaster.core.history import Start
from broadcaster.core.replay import Replay

Flight = tuple[tuple[str, ...], Start]  # one shared history read: channels and start
Read = Callable[[list[str], Start], Awaitable[Replay]]

# How long a history read waits for more clients asking for the same range.
GATHER_SECONDS = 0.002


class SharedReplays:
    """Reads replays through `read`; requests that arrive before a read goes out share it.

    None joins a read already sent, because each requester must be subscribed before the
    read it relies on, or it could miss what was published in between.
    """

    def __init__(self, read: Read) -> None:
        self._read = read
        self._flights: dict[Flight, asyncio.Future[Replay]] = {}
        self._flying: set[asyncio.Task[None]] = set()

    async def replay(self, channels: Sequence[str], start: Start) -> Replay:
        """The replay of `channels` from `start`, shared with whoever asks the same now."""
        key = (tuple(channels), start)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().create_future()
            self._flights[key] = flight
            task = asyncio.create_task(self._fly(key, flight))
            self._flying.add(task)
            task.add_done_callback(self._flying.discard)
        return await asyncio.shield(flight)

    async def _fly(self, key: Flight, flight: asyncio.Future[Replay]) -> None:
        await asyncio.sleep(GATHER_SECONDS)
        del self._flights[key]  # from now on, newcomers start their own read
        channels, start = key
        try:
            flight.set_result(await self._read(list(channels), start))
        except Exception as exc:  # handed to every requester, raised there
            flight.set_exception(exc)
            # (Marked retrieved: when every requester has left, nobody else will.)
            flight.exception()
