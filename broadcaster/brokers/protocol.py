"""The broker interface: how a node hears about messages published anywhere."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from broadcaster.core.history import Start
from broadcaster.core.identity import Attendee, AttendeePage
from broadcaster.core.ids import EventId
from broadcaster.core.message import Message
from broadcaster.core.publication import Publication
from broadcaster.core.replay import Replay

Deliver = Callable[[str, Message], None]
"""Called by a broker, on the event loop, for every message on a subscribed channel."""


class BrokerUnavailable(Exception):
    """The broker cannot take a publish or a history read right now."""


class NotConfirmed(BrokerUnavailable):
    """Fewer replicas than required confirmed a publish in time (it may still arrive), or
    the primary refused it for want of replicas."""


IDEMPOTENCY_MAX_KEYS = 100_000
"""Idempotency keys one channel may remember per window (each costs Redis 120-600 bytes)."""
KEY_LIMIT_REASON = (
    f"too many idempotency keys on this channel within the window (at most "
    f"{IDEMPOTENCY_MAX_KEYS:,})"
)


class KeyLimit(Exception):
    """A publish with a new idempotency key on a channel that remembers the most it may."""


CLOSED_REASON = "channel is closed: publish with reopen to open it again"


class ChannelClosed(Exception):
    """A publish (without `reopen`) to a channel whose last message closed it."""


class Broker(Protocol):
    """A swappable transport between publishers and nodes (in-memory or Redis)."""

    @property
    def connected(self) -> bool:
        """Whether the broker can currently deliver and publish."""
        ...

    async def start(self, deliver: Deliver) -> None:
        """Begin delivering messages of subscribed channels to `deliver`, in order, gap-free."""
        ...

    async def close(self) -> None:
        """Stop delivering and release every connection."""
        ...

    def group(self, channel: str) -> str:
        """The group of `channel`: channels of one group share one sequence, so one id is
        a position in all of them (every channel, but on a Redis Cluster: its `{tag}`)."""
        ...

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """Ask for `channel`; the future resolves once its messages will be delivered.

        Calls to subscribe and unsubscribe take effect in call order.
        """
        ...

    def unsubscribe(self, channel: str) -> None:
        """Stop delivering `channel`."""
        ...

    async def publish(self, batch: Sequence[Publication]) -> list[str]:
        """Publish durably to every node, in order; returns the ids.

        A publication whose idempotency key was seen on its channel within the window
        is not published again: its id is the first publish's. One to a closed channel,
        unless it reopens it, raises ChannelClosed (those before it are published).
        """
        ...

    async def closed(self, channels: Sequence[str]) -> dict[str, EventId]:
        """Which of `channels` are closed now (their newest message closes them), each
        with that message's id. BrokerUnavailable if the broker cannot tell."""
        ...

    async def replay(self, channels: Sequence[str], start: Start) -> Replay:
        """What subscribed `channels` replay from `start`: what they missed after an id
        (malformed ids allowed: they reset), or retained messages (`earliest`, `tail`).

        When it returns, every live message up to the replay's head has been delivered.
        """
        ...


class PresenceStore(Protocol):
    """Where the nodes sharing a broker keep their subscriber counts and identified
    subscribers per channel, each process its own (a swappable part: Redis; the embedded
    broker needs none), and announce identified subscribers' first and last connections.

    Every method raises BrokerUnavailable when the store cannot be reached.
    """

    async def refresh(self) -> bool:
        """Say this process is alive for the store's bound from now. False when it was
        not alive a moment ago (its first call, or it lapsed and readers may have dropped
        its counts): the caller then writes everything again."""
        ...

    async def write(
        self,
        counts: Mapping[str, int],
        seats: Mapping[tuple[str, str], Attendee | None] | None = None,
    ) -> None:
        """Set this process's count of each channel (0 removes it) and its seat of each
        (channel, sub) (None removes it), in one batch; a sub's first seat on any process
        and its last are announced (`join`, `leave`) on the channels that ask for it."""
        ...

    async def read(self, channels: Sequence[str]) -> dict[str, int]:
        """Each channel's subscribers, summed over the processes alive now."""
        ...

    async def attendees(self, channel: str, after: str | None, limit: int) -> AttendeePage:
        """A page of `channel`'s identified subscribers on live processes, by `sub`."""
        ...

    async def sweep(self) -> int:
        """Remove what dead processes left (announcing the leaves); how many were swept."""
        ...

    async def remove(self, channels: Sequence[str]) -> None:
        """This process stops: drop its counts of `channels`, its seats and liveness."""
        ...

    async def close(self) -> None:
        """Release the store's connections."""
        ...
