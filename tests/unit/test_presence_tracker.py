"""The presence tracker: one batch per flush of only the channels (and identified
subscribers) whose count changed, everything written again after a lapse, and what the
store holds always the truth once flushed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from broadcaster.brokers.memory import MemoryBroker
from broadcaster.brokers.protocol import BrokerUnavailable
from broadcaster.core.identity import Attendee, AttendeePage, Identity
from broadcaster.delivery.hub import Hub
from broadcaster.delivery.presence import PresenceTracker
from broadcaster.delivery.stream import Stream
from tests.support.fakes import FakeTransport
from tests.support.wait import wait_until

CHANNELS = ("a", "b", "c", "d")


class FakeStore:
    """A store that records each batch and can be told to fail or to have lapsed."""

    def __init__(self) -> None:
        self.batches: list[dict[str, int]] = []
        self.held: dict[str, int] = {}
        self.seats: dict[tuple[str, str], int] = {}
        self.down = False
        self.lapsed = True
        self.removed: list[str] = []
        self.refreshes = 0

    async def refresh(self) -> bool:
        self.refreshes += 1
        if self.down:
            raise BrokerUnavailable("down")
        alive, self.lapsed = not self.lapsed, False
        return alive

    async def write(
        self,
        counts: Mapping[str, int],
        seats: Mapping[tuple[str, str], Attendee | None] | None = None,
    ) -> None:
        if self.down:
            raise BrokerUnavailable("down")
        self.batches.append(dict(counts))
        for channel, count in counts.items():
            if count:
                self.held[channel] = count
            else:
                self.held.pop(channel, None)
        for key, seat in (seats or {}).items():
            if seat is None:
                self.seats.pop(key, None)
            else:
                self.seats[key] = seat.connections

    async def attendees(self, channel: str, after: str | None, limit: int) -> AttendeePage:
        raise NotImplementedError  # (not read here)

    async def sweep(self) -> int:
        return 0

    async def read(self, channels: Sequence[str]) -> dict[str, int]:
        return {channel: self.held.get(channel, 0) for channel in channels}

    async def remove(self, channels: Sequence[str]) -> None:
        self.removed = list(channels)

    async def close(self) -> None: ...


def opened(hub: Hub, channels: list[str], sub: str | None = None) -> Stream:
    identity = None if sub is None else Identity(sub)
    return hub.open(
        FakeTransport(),
        channels,
        max_pending_bytes=1 << 20,
        release=lambda: None,
        identity=identity,
    )


def truth(hub: Hub) -> dict[str, int]:
    return {c: hub.local_count(c) for c in CHANNELS if hub.local_count(c)}


def seated(hub: Hub) -> dict[tuple[str, str], int]:
    return {(c, a.sub): a.connections for c in CHANNELS for a in hub.roster.attendees(c)}


# A step: join a stream of these channels (anonymous, or of a sub), or the n-th open
# stream leaves; then maybe a flush, maybe with the store down.
STEPS = st.lists(
    st.tuples(
        st.one_of(
            st.tuples(
                st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3, unique=True),
                st.sampled_from([None, "ana", "bo"]),
            ),
            st.integers(0, 20),
        ),
        st.booleans(),
        st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_flushes_write_only_changed_channels_and_converge_on_the_truth(
    steps: list[tuple[tuple[list[str], str | None] | int, bool, bool]],
) -> None:
    async def run() -> None:
        broker = MemoryBroker()
        hub = Hub(broker, heartbeat_interval=60)
        await broker.start(hub.deliver)
        store = FakeStore()
        tracker = PresenceTracker(hub, store)
        hub.track_changes()
        hub.roster.track_changes()
        open_: list[Stream] = []
        touched: set[str] = set()
        for action, flush, down in steps:
            if isinstance(action, tuple):
                channels, sub = action
                stream = opened(hub, channels, sub)
                await hub.join(stream)
                open_.append(stream)
                touched |= set(channels)
            elif open_:
                stream = open_.pop(action % len(open_))
                hub.leave(stream)
                touched |= set(stream.channels)
            if flush:
                store.down = down
                before = len(store.batches)
                await tracker.flush()
                if not down:
                    assert len(store.batches) <= before + 1  # one batch per flush
                    if len(store.batches) > before:
                        assert set(store.batches[-1]) <= touched  # only what changed
                        touched = set()
                    assert store.held == truth(hub)
                    assert store.seats == seated(hub)
        store.down = False
        await tracker.flush()
        assert store.held == truth(hub)
        assert store.seats == seated(hub)
        assert await tracker.counts(list(CHANNELS)) == {c: hub.local_count(c) for c in CHANNELS}
        await broker.close()

    asyncio.run(run())


async def test_after_a_lapse_every_count_is_written_again_twice() -> None:
    broker = MemoryBroker()
    hub = Hub(broker, heartbeat_interval=60)
    await broker.start(hub.deliver)
    store = FakeStore()
    tracker = PresenceTracker(hub, store, interval=0.01, bound=0.03)
    await tracker.start()
    streams = [opened(hub, [c]) for c in "ab"]
    for stream in streams:
        await hub.join(stream)
    await wait_until(lambda: store.held == {"a": 1, "b": 1}, 5, "the counts written")
    quiet, refreshes = len(store.batches), store.refreshes
    await wait_until(lambda: store.refreshes >= refreshes + 5, 5, "five more ticks")
    assert len(store.batches) == quiet  # nothing changed: nothing written
    store.lapsed = True
    await wait_until(lambda: len(store.batches) >= quiet + 2, 5, "two rewrites")
    assert store.batches[quiet : quiet + 2] == [{"a": 1, "b": 1}] * 2
    await tracker.stop()
    assert sorted(store.removed) == ["a", "b"]
    await broker.close()
