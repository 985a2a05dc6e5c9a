"""`presence.lua` against a model, on a real Redis (hypothesis stateful): whatever node
processes set a sub's seats to, in any order, and whichever process dies and is swept,
the channel hears one `join` when a sub goes from no seat anywhere to one, one `leave`
for the reverse, and nothing else."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from hypothesis import settings, stateful
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.brokers.redis.presence import RedisPresence
from broadcaster.core.identity import Attendee, Identity
from broadcaster.core.message import unpack
from tests.support.processes import RedisServer
from tests.support.wait import eventually

PROCESSES = 3
SUBS = ("ana", "bo")
KEYS = KeySpace("sse:")
END = b"end"
_examples = itertools.count()


class Seats(RuleBasedStateMachine):
    """Processes set seats and die; the model says which subs are present anywhere."""

    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.channel = f"m{next(_examples)}"
        self.client = aioredis.Redis.from_url(self.url)
        self.stores = [self.fresh(n) for n in range(PROCESSES)]
        self.seats: list[dict[str, int]] = [{} for _ in range(PROCESSES)]
        self.expected: list[tuple[str, str]] = []
        self.heard: list[Any] = []
        self.pubsub = self.client.pubsub()
        self.run(self.pubsub.subscribe(KEYS.pubsub(self.channel)[1]))
        self.listening = self.loop.create_task(self.listen())

    def run(self, call: Any) -> Any:
        return self.loop.run_until_complete(call)

    def fresh(self, n: int) -> RedisPresence:
        store = RedisPresence(self.client, KEYS, f"p{n}", announces=lambda channel: True)
        self.run(store.refresh())
        return store

    async def listen(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] == "message":
                self.heard.append(message["data"])

    def present(self) -> set[str]:
        return {sub for seats in self.seats for sub, count in seats.items() if count}

    def expect(self, before: set[str]) -> None:
        after = self.present()
        for sub in sorted(after - before):
            self.expected.append(("join", sub))
        for sub in sorted(before - after):
            self.expected.append(("leave", sub))

    @rule(n=st.integers(0, PROCESSES - 1), sub=st.sampled_from(SUBS), count=st.integers(0, 2))
    def set_seat(self, n: int, sub: str, count: int) -> None:
        before = self.present()
        seat = Attendee(sub, "null", count) if count else None
        self.run(self.stores[n].write({}, {(self.channel, sub): seat}))
        self.seats[n][sub] = count
        self.expect(before)

    @rule(n=st.integers(0, PROCESSES - 1), by=st.integers(0, PROCESSES - 1))
    def die(self, n: int, by: int) -> None:
        """Process n dies (its liveness is gone); another one's sweep takes it."""
        before = self.present()
        self.run(self.client.delete(KEYS.alive(self.stores[n].process)))
        sweeper = self.stores[by] if by != n else self.stores[(n + 1) % PROCESSES]
        self.run(sweeper.sweep())
        self.seats[n] = {}
        self.stores[n] = self.fresh(n)
        self.expect(before)

    def teardown(self) -> None:
        try:
            self.run(self.client.publish(KEYS.pubsub(self.channel)[1], END))

            async def ended() -> bool:
                return END in self.heard

            self.run(eventually(ended, 10, "the end marker"))
            said = []
            for payload in self.heard[: self.heard.index(END)]:
                message = unpack(payload)
                assert message.id is None
                said.append((message.event, message.data))
            expected = [(kind, Identity(sub).announcement()) for kind, sub in self.expected]
            assert said == expected
        finally:
            self.listening.cancel()
            self.run(asyncio.gather(self.listening, return_exceptions=True))
            self.run(self.pubsub.aclose())
            self.run(self.client.aclose())
            self.loop.close()


def test_joins_and_leaves_follow_the_model(redis_server: RedisServer) -> None:
    Seats.url = redis_server.url
    # (Untyped on the hypothesis floor: called through a typed name.)
    run_machine: Callable[..., None] = stateful.run_state_machine_as_test
    run_machine(Seats, settings=settings(max_examples=150, stateful_step_count=15, deadline=None))
