"""A model of the delivery path, checked by property-based tests (issue 21).

A hypothesis state machine drives one real node (`RedisBroker` with its reconnecting
session, shared replays, `PubSubLink` and `Sequencer`; the `Hub`; a `Stream` per
client) against an in-memory Redis (`tests/support/model.py`): publishes on three
channels; pub/sub commands and replies that flow at once or lag, replies duplicated
(Redis drops them only with the connection, as the model does); the connection lost
and restored, Redis out of reach meanwhile, a session's first read failing; backfill
and replay reads that return early or late, or fail (and are retried); time that
passes (backoffs, retries, the replays' gather window: the loop's clock is the
model's); and clients that join (live, `earliest`, `tail=N`, or after any id a client
held) and leave at any moment. A client is opened as `EventStreamResponse.serve` does
it: `Hub.open`, `Hub.join`, the broker's replay, the replay written, `Hub.go_live`
with the replay's head and `caught_up`.

After every step, each client's stream is a prefix of the truth for its channels after
its start, with no duplicate and no reordering, or carries a `reset` where history was
lost (`Watch`), and the node logged no error. At the end, with Redis back, every read
answered, the node settled and one more message published on each channel, every open
stream has everything, and no error went unretrieved.

The search aims (`target`) at replays read while a backfill is under way. What the model
found is kept at the end of this module as plain tests, each a shrunk counterexample
that failed before its fix. In the normal suite it runs 150 examples of up to 40 steps
(a few seconds). For longer:

    MODEL_EXAMPLES=5000 MODEL_STEPS=80 .venv/bin/pytest tests/unit/test_delivery_model.py

(`--hypothesis-seed=<n>` fixes the seed; a failure prints its steps, shrunk.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings, target
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from broadcaster.brokers.protocol import BrokerUnavailable
from broadcaster.core.history import Start
from broadcaster.core.message import Message
from broadcaster.core.replay import Replay
from broadcaster.delivery.hub import Hub
from broadcaster.delivery.stream import Stream
from tests.support.fakes import FakeTransport
from tests.support.model import (
    KINDS,
    ModelLoop,
    ModelRedis,
    ReadKind,
    Watch,
    id_of,
    model_broker,
)

CHANNELS = ("a", "b", "c")
MAX_CLIENTS = 4
TICK = 0.003
"""The time each step takes (past the replays' 2 ms gather window; within a backoff)."""
EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "150"))
STEPS = int(os.environ.get("MODEL_STEPS", "40"))
WAITING: tuple[ReadKind, ...] = ("backfill", "replay")
"""The reads answered early or late, or failed, by `answer_read` (a session's read of
the head is answered at once)."""


async def spin(turns: int) -> None:
    """Let every task that can run take `turns` turns."""
    for _ in range(turns):
        await asyncio.sleep(0)


class Errors(logging.Handler):
    """The node's errors (a bug, never an outage, logs one)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@dataclass(eq=False)
class Client:
    """One client: what it asked for, its connection, its stream once open."""

    number: int
    channels: tuple[str, ...]
    start: Start | None
    watch: Watch
    transport: FakeTransport = field(default_factory=FakeTransport)
    task: asyncio.Task[None] | None = None
    stream: Stream | None = None
    member: bool = False
    """Whether its stream is in the hub (joined, not left)."""
    live: bool = False
    closed: bool = False

    def __repr__(self) -> str:
        return f"Client({self.number}, {self.channels}, {self.start})"


class DeliveryModel(RuleBasedStateMachine):
    """One node, its clients and the model Redis; see the module's docstring."""

    collect = 1
    """The generations the end collects, to find errors held in reference cycles (a full
    collection costs 50 ms an example; the young ones hold what this example made)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = ModelLoop()
        self.redis = ModelRedis()
        self.clients: list[Client] = []
        self.pubsub_lag = False
        self.waiting: tuple[ReadKind, ...] = ()
        """The kinds of history read that wait for `answer_read` (the others are
        answered as soon as they are sent)."""
        self.heads_fail = 0
        """How many of the next sessions' reads of the head fail."""
        self.clean = True
        self.overlaps = 0
        """Replays read while the sequencer held (a backfill under way): the search
        aims at more of them."""
        self.errors = Errors()
        logging.getLogger("broadcaster").addHandler(self.errors)
        self.unhandled_errors: list[str] = []
        self.loop.set_exception_handler(self.unhandled)
        self.loop.run_until_complete(self._start())
        self.settle()
        self.waiting = WAITING

    async def _start(self) -> None:
        self.broker = model_broker(self.redis, lambda: self.redis.now_ms / 1000)
        self.hub = Hub(self.broker, heartbeat_interval=15)
        self.starting = asyncio.create_task(self.broker.start(self.deliver))

    # The node's side.

    def deliver(self, channel: str, message: Message) -> None:
        """The broker's delivery to the hub; a backfill's reset is noted for its streams."""
        if message.event == "reset":
            for client in self.clients:
                if client.member and channel in client.channels:
                    client.watch.live_resets.append((channel, self.redis.backfill_head))
        self.hub.deliver(channel, message)

    async def serve(self, client: Client) -> None:
        """`EventStreamResponse.serve`, in its order, writing to a fake transport."""
        release = partial(setattr, client, "member", False)
        stream = client.stream = self.hub.open(
            client.transport, client.channels, max_pending_bytes=1 << 20, release=release
        )
        handed_off = False
        try:
            client.member = True
            await self.hub.join(stream)
            joined = self.redis.seq
            replayed = None
            if client.start is not None:
                try:
                    replayed = await self.broker.replay(client.channels, client.start)
                except BrokerUnavailable:
                    replayed = Replay(None, resets={"unavailable": list(client.channels)})
            self.expect(client, joined, replayed)
            if replayed is not None:
                async for frames, _ in replayed.pieces():
                    client.transport.write(frames)
            if not stream.ended:
                handed_off = True
                self.hub.go_live(
                    stream,
                    chunked=False,
                    replayed_through=replayed.head if replayed else None,
                    caught_up=replayed.caught_up if replayed else True,
                )
                client.live = True
        finally:
            if not handed_off:
                stream.connection_lost()

    def expect(self, client: Client, joined: int, replayed: Replay | None) -> None:
        """Where the client's stream starts, per channel, worked out from the model alone
        (and whether its replay reset the channels it should)."""
        channels, start, watch = client.channels, client.start, client.watch
        if replayed is None or start is None or "unavailable" in replayed.resets:
            resets = len(replayed.resets) if replayed else 0
            watch.expect(dict.fromkeys(channels, joined), loose=True, replay_resets=resets)
            return
        head = 0 if replayed.head is None else replayed.head.seq
        assert head <= self.redis.seq and replayed.head in (None, id_of(head))
        kept = {c: self.redis.retained(c, head) for c in channels}
        if start.after is not None:
            after = int(start.after.partition("-")[2])
            trimmed = [
                c
                for c in channels
                if any(
                    after < p.seq <= head and p not in kept[c]
                    for p in self.redis.channels.get(c, [])
                )
            ]
            wanted = {"trimmed": sorted(trimmed)} if trimmed else {}
            got = {reason: sorted(names) for reason, names in replayed.resets.items()}
            assert got == wanted, f"{client}'s replay reset {got}, the model {wanted}"
            starts = {c: head if c in trimmed else after for c in channels}
        else:
            assert not replayed.resets, f"{client}'s replay reset {replayed.resets}"
            starts = {c: kept[c][0].seq - 1 if kept[c] else head for c in channels}
            if start.tail is not None:
                merged = sorted(p.seq for c in channels for p in kept[c])
                window = merged[max(0, len(merged) - start.tail) :] if start.tail else []
                floor = window[0] - 1 if window else head
                starts = {c: max(s, floor) for c, s in starts.items()}
        watch.expect(starts, loose=False, replay_resets=len(replayed.resets))

    def unhandled(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """What the loop would log: an error nobody retrieved, a task destroyed pending
        (checked at the end: an error held in a reference cycle is seen when the garbage
        collector gets to it)."""
        error = context.get("exception")
        self.unhandled_errors.append(f"{context['message']}: {error!r}")

    # Stepping the loop.

    def settle(self) -> None:
        """Let the node run: every task as far as it goes now, pub/sub traffic flowing
        (unless it lags), history reads answered (unless they wait for `answer_read`);
        then one `TICK` of time, and the same again."""
        self.loop.run_until_complete(self._settle())

    async def _settle(self) -> None:
        for tick in (0.0, TICK):
            self.loop.now += tick
            quiet = 0
            for _ in range(500):
                await spin(10)
                moved = False
                if not self.pubsub_lag:
                    moved = self.redis.flow()
                if self.heads_fail and self.redis.answer(fail=True, kinds=["head"]):
                    self.heads_fail -= 1
                answered = self.redis.answer_all([k for k in KINDS if k not in self.waiting])
                moved = answered or moved
                quiet = 0 if moved else quiet + 1
                if quiet >= 2:
                    break

    def step(self) -> None:
        self.clean = False
        self.settle()

    # Rules: Redis.

    @rule(channel=st.sampled_from(CHANNELS))
    def publish(self, channel: str) -> None:
        self.redis.publish(channel)
        self.step()

    @rule(on=st.booleans())
    def lag(self, on: bool) -> None:
        """Whether pub/sub traffic waits for the two rules below, or flows at once."""
        self.pubsub_lag = on
        self.step()

    @precondition(lambda self: self.redis.connection is not None and self.pubsub_lag)
    @rule(count=st.integers(1, 3))
    def redis_runs_commands(self, count: int) -> None:
        assert self.redis.connection is not None
        self.redis.connection.execute(count)
        self.step()

    @precondition(lambda self: self.redis.connection is not None and self.pubsub_lag)
    @rule(count=st.integers(1, 3))
    def node_reads_replies(self, count: int) -> None:
        assert self.redis.connection is not None
        self.redis.connection.transmit(count)
        self.step()

    def messages(self) -> list[int]:
        connection = self.redis.connection
        if connection is None:
            return []
        return [n for n, reply in enumerate(connection.replies) if reply.kind == "message"]

    @precondition(lambda self: self.messages())
    @rule(pick=st.integers(0, 5), later=st.booleans())
    def duplicate_message(self, pick: int, later: bool) -> None:
        """A message that arrives twice: right after itself, or after everything queued."""
        connection = self.redis.connection
        assert connection is not None
        found = self.messages()
        where = found[pick % len(found)]
        copy = connection.replies[where]
        connection.replies.insert(len(connection.replies) if later else where + 1, copy)
        self.step()

    @precondition(lambda self: self.redis.connection is not None)
    @rule(out_of_reach=st.booleans())
    def lose_link(self, out_of_reach: bool) -> None:
        """The pub/sub connection drops; the node tries again after its first backoff
        (Redis may stay out of reach until restored)."""
        assert self.redis.connection is not None
        self.redis.connection.drop()
        self.redis.up = not out_of_reach
        self.step()
        self.loop.now += 0.05
        self.step()

    @rule(count=st.integers(1, 2))
    def head_reads_fail(self, count: int) -> None:
        """The next `count` sessions fail at their read of the head (and start over)."""
        self.heads_fail = count
        self.step()

    @precondition(lambda self: not self.redis.up)
    @rule()
    def restore(self) -> None:
        self.redis.up = True
        self.step()

    @precondition(lambda self: self.redis.pending(WAITING))
    @rule(pick=st.integers(0, 2), fail=st.booleans())
    def answer_read(self, pick: int, fail: bool) -> None:
        """A backfill or replay read under way returns (from the model as it is now),
        or fails."""
        reads = self.redis.pending(WAITING)
        if reads[pick % len(reads)].kind == "replay" and self.broker._sequencer.holding:
            self.overlaps += 1
        self.redis.answer(pick, fail=fail, kinds=WAITING)
        self.step()

    @rule(seconds=st.sampled_from([0.02, 0.1, 1.0, 6.0]))
    def time_passes(self, seconds: float) -> None:
        self.loop.now += seconds
        self.step()

    # Rules: clients.

    @initialize(
        channels=st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3, unique=True),
        published=st.lists(st.sampled_from(CHANNELS), max_size=3),
    )
    def first_client(self, channels: list[str], published: list[str]) -> None:
        """A live client, and messages since: the node starts with positions to keep."""
        self.open_client(channels, "live", 0, 1)
        for channel in published:
            self.publish(channel)

    def open_clients(self) -> list[Client]:
        return [client for client in self.clients if not client.closed]

    @precondition(lambda self: self.broker.connected and len(self.open_clients()) < MAX_CLIENTS)
    @rule(
        channels=st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3, unique=True),
        kind=st.sampled_from(["live", "resume", "earliest", "tail"]),
        number=st.integers(0, 4),
        copies=st.integers(1, 2),
    )
    def open_client(self, channels: list[str], kind: str, number: int, copies: int) -> None:
        """A client subscribes (`copies` of it at once: they may share a replay read),
        live, resuming after an id a client held (the `number`th newest), from the
        earliest message retained or the newest `number`."""
        start: Start | None = None
        if kind == "resume":
            held = self.positions()
            start = Start(after=held[-1 - number % len(held)]) if held else Start()
        elif kind == "earliest":
            start = Start()
        elif kind == "tail":
            start = Start(tail=number)
        for _ in range(copies):
            watch = Watch(self.redis, tuple(channels))
            client = Client(len(self.clients), tuple(channels), start, watch)
            self.clients.append(client)
            client.task = self.loop.create_task(self.serve(client))
        self.step()

    def positions(self) -> list[str]:
        held = {p for client in self.clients for p in client.watch.positions}
        return sorted(held, key=lambda text: int(text.partition("-")[2]))

    @precondition(lambda self: self.open_clients())
    @rule(pick=st.integers(0, 3))
    def close_client(self, pick: int) -> None:
        """A client goes away: mid-way through its opening, or once live."""
        clients = self.open_clients()
        client = clients[pick % len(clients)]
        client.closed = True
        assert client.stream is not None
        if client.task is not None and not client.task.done():
            client.task.cancel()
        else:
            client.transport.close()
            client.stream.connection_lost(None)
        self.step()

    # The invariant.

    @invariant()
    def streams_are_prefixes_of_the_truth(self) -> None:
        assert not self.errors.records, f"the node logged errors: {self.errors.records}"
        for client in self.clients:
            task = client.task
            if task is not None and task.done():
                if not task.cancelled() and (error := task.exception()) is not None:
                    raise error
                if client.closed:
                    client.task = None  # (what its frames hold can be collected)
            client.watch.take(client.transport.writes)
        self.clean = True

    # The end: everything settles, and every open stream has everything.

    def teardown(self) -> None:
        if currently_in_test_context():
            target(float(self.overlaps), label="replays read during a backfill")
        try:
            if self.clean:
                self.finish()
        finally:
            self.close()

    def finish(self) -> None:
        self.pubsub_lag, self.waiting, self.heads_fail = False, (), 0
        self.redis.up = True
        self.quiesce()
        for channel in CHANNELS:
            self.redis.publish(channel)
        self.quiesce()
        self.streams_are_prefixes_of_the_truth()
        for client in self.open_clients():
            if client.live:
                missing = client.watch.missing()
                assert not missing, f"{client} never got {missing} (got {client.watch.received})"
        gc.collect(self.collect)
        assert not self.unhandled_errors, f"the loop had unhandled errors: {self.unhandled_errors}"

    def quiesce(self) -> None:
        """Time passes, every read is answered, everything flows, until nothing moves."""
        for _ in range(30):
            self.settle()
            self.loop.now += 6.0
            self.settle()
            busy = [c for c in self.clients if c.task and not c.task.done()]
            if self.broker.connected and not self.redis.pending() and not busy:
                return
        raise AssertionError("the node did not settle")

    def close(self) -> None:
        logging.getLogger("broadcaster").removeHandler(self.errors)
        try:
            self.loop.run_until_complete(self._close())
        finally:
            self.loop.close()

    async def _close(self) -> None:
        await self.broker.close()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


DeliveryModel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # CI runs the same examples every time (a red run is then a change's doing, and can
    # be replayed); developers' runs search anew each time.
    derandomize=os.environ.get("CI") == "true" and "MODEL_EXAMPLES" not in os.environ,
    # (Not `explain`: it traces every line run, and a failure took minutes to report.)
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
TestDeliveryModel = DeliveryModel.TestCase
if "MODEL_EXAMPLES" in os.environ:  # a long run: no time limit (pytest-timeout's is 240 s)
    TestDeliveryModel = pytest.mark.timeout(0)(TestDeliveryModel)


# The model's counterexamples, as plain tests.


class Exact(DeliveryModel):
    """The model as the counterexamples run it: a full collection at the end."""

    collect = 2


Step = Callable[[DeliveryModel], None]


def play(model: DeliveryModel, *steps: Step) -> None:
    """Run `steps` on `model`, checking the invariant after each and the end."""
    try:
        for step in steps:
            step(model)
            model.streams_are_prefixes_of_the_truth()
    finally:
        model.teardown()


def test_a_replay_read_while_a_backfill_is_under_way_is_not_caught_up() -> None:
    # What the model found while `caught_up` left out the sequencer's hold: the replay
    # went live caught up, and the backfill's drain brought a:2 to it a second time.
    play(
        Exact(),
        lambda m: m.first_client(channels=["a"], published=["a"]),
        lambda m: m.lose_link(out_of_reach=False),  # back at once: `a` held, backfill waits
        lambda m: m.publish(channel="a"),
        lambda m: m.open_client(channels=["a"], kind="resume", number=0, copies=1),
        lambda m: m.answer_read(pick=1, fail=False),  # the replay (head a:2), first
        lambda m: m.answer_read(pick=0, fail=False),  # then the backfill
    )


def test_an_untracked_channel_gets_what_an_outage_hid() -> None:
    # Finding 1. Nothing was published before: the sequencer knew no position to give
    # `a`, and did not backfill it after the reconnect. (A channel with no position now
    # starts at what the node knew before the session: here, an empty sequence.)
    play(
        Exact(),
        lambda m: m.first_client(channels=["a"], published=[]),
        lambda m: m.lose_link(out_of_reach=True),
        lambda m: m.publish(channel="a"),  # a:1, published meanwhile; the end publishes a:2
    )


def test_a_subscription_the_disconnect_confirmed_gets_what_the_outage_hid() -> None:
    # Finding 1. The SUBSCRIBE of `a` was not acknowledged when the connection dropped:
    # the join returned anyway (the link's close resolves it), and the stream went live.
    play(
        Exact(),
        lambda m: m.first_client(channels=["b"], published=["b"]),
        lambda m: m.lag(on=True),
        lambda m: m.open_client(channels=["a"], kind="live", number=0, copies=1),
        lambda m: m.lose_link(out_of_reach=False),
        lambda m: m.publish(channel="a"),  # a:2: Redis has not subscribed `a` again yet
        lambda m: m.lag(on=False),
        lambda m: m.publish(channel="a"),  # a:3 arrives; a:2 must come first
    )


def test_a_live_stream_gets_no_message_older_than_one_it_has() -> None:
    # Finding 2. `a` is first subscribed after the node's newest id (b:1), so it starts
    # there; the backfill after the reconnect brings a:2, published before the
    # subscription, after b:3 on the stream. (Ids on a stream now only grow.)
    play(
        Exact(),
        lambda m: m.first_client(channels=["b"], published=["b"]),  # b:1: the newest id
        lambda m: m.publish(channel="a"),  # a:2, before anybody follows `a`
        lambda m: m.open_client(channels=["a", "b"], kind="live", number=0, copies=1),
        lambda m: m.publish(channel="b"),  # b:3
        lambda m: m.lose_link(out_of_reach=False),  # the backfill of `a` from b:1: a:2
    )


def test_a_replay_read_that_fails_after_its_clients_left_logs_no_error() -> None:
    # Finding 3: the shared read's exception was never retrieved, and asyncio said so.
    play(
        Exact(),
        lambda m: m.first_client(channels=["a"], published=["a"]),
        lambda m: m.open_client(channels=["a"], kind="earliest", number=0, copies=1),
        lambda m: m.close_client(pick=1),  # while its replay read waits
        lambda m: m.answer_read(pick=0, fail=True),
    )


def test_a_live_stream_that_joined_during_an_outage_keeps_its_start() -> None:
    # `a` had no position when two clients joined it during the outage (their SUBSCRIBE
    # was answered by the connection's loss): a replay read later gave `a` its head as
    # position, and the live client never got a:1, published before that head.
    play(
        Exact(),
        lambda m: m.first_client(channels=["a"], published=[]),
        lambda m: m.lag(on=True),
        lambda m: m.close_client(pick=0),  # `a` has no local client: no position
        lambda m: m.open_client(channels=["a"], kind="earliest", number=0, copies=1),
        lambda m: m.open_client(channels=["a"], kind="live", number=0, copies=1),
        lambda m: m.head_reads_fail(count=1),
        lambda m: m.lose_link(out_of_reach=False),
        lambda m: m.publish(channel="a"),
    )
