"""Token coalescing: the merging rule (with the time given), and `stream(coalesce=...)`
async and sync over a fake transport, with a fake clock where the rule is timed."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import orjson
import pytest

from broadcaster.client.coalesce import Chunk, Coalescer
from tests.support.publishers import FakeAsync, FakeSync
from tests.support.wait import wait_until, wait_until_sync

TWINS = ["async", "sync"]


class FakeClock:
    """Monotonic seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def added(merge: Coalescer, data: Iterable[Any], now: float = 0.0) -> list[str]:
    """The events complete after adding each of `data` at `now`."""
    return [event for item in data for event in merge.add(Chunk.of(item), now)]


def test_off_is_one_event_per_chunk_as_publish_sends_it() -> None:
    merge = Coalescer(0)
    assert added(merge, ["a", {"x": 1}, b"b", [1]]) == ["a", '{"x":1}', "b", "[1]"]
    assert merge.wait(0.0) is None and merge.flush() == []
    assert merge.counts() == {"chunks": 4}


def test_a_window_runs_from_its_first_chunk_and_a_chunk_at_its_edge_starts_the_next() -> None:
    merge = Coalescer(0.25)
    assert added(merge, ["a"], 2.0) == [] and merge.wait(2.0) == 0.25
    assert added(merge, ["b"], 2.2) == [] and merge.due(2.2) == []
    assert merge.wait(2.2) == pytest.approx(0.05)
    assert added(merge, ["c"], 2.25) == ["ab"]  # exactly at the edge: the next event's first
    assert merge.wait(2.25) == 0.25
    assert merge.due(2.5) == ["c"]  # the window passed with no chunk: it goes out alone
    assert merge.wait(2.5) is None and merge.due(9.0) == []
    assert added(merge, ["d"], 3.0) == [] and added(merge, ["e"], 9.0) == ["d"]  # overdue
    assert merge.wait(9.5) == 0.0 and merge.flush() == ["e"] and merge.flush() == []
    assert merge.counts() == {"chunks": 5, "events": 4}


def test_the_byte_bound_counts_utf8_bytes_and_never_splits_a_chunk() -> None:
    merge = Coalescer(1.0, max_bytes=8)
    assert added(merge, ["abc", "dé"]) == []  # 6 bytes: é takes two
    assert added(merge, ["xyz"]) == ["abcdé"]  # 9 would pass the bound: it starts the next
    assert added(merge, ["12345"]) == ["xyz12345"]  # exactly 8: out at once
    assert added(merge, ["0123456789"]) == ["0123456789"]  # over it alone: its own event
    assert added(merge, ["a", "0123456789"]) == ["a", "0123456789"]
    assert merge.wait(0.0) is None
    assert merge.counts() == {"chunks": 7, "events": 5}


def test_text_is_concatenated_and_any_other_value_makes_a_json_array() -> None:
    merge = Coalescer(1.0)
    assert added(merge, ["a", b"b", bytearray(b"c"), ""]) == [] and merge.flush() == ["abc"]
    added(merge, ['say "hi"\n', {"x": [1, None]}, 2, "é".encode()])
    [array] = merge.flush()
    assert array == '["say \\"hi\\"\\n",{"x":[1,null]},2,"é"]'
    assert orjson.loads(array) == ['say "hi"\n', {"x": [1, None]}, 2, "é"]
    added(merge, [7])
    assert merge.flush() == ["[7]"]  # one JSON chunk is an array too: a reader can tell
    added(merge, [[1, 2]])
    assert merge.flush() == ["[[1,2]]"]


def test_an_array_is_bounded_in_its_own_bytes() -> None:
    merge = Coalescer(1.0, max_bytes=10)
    assert added(merge, [1, 22]) == []  # [1,22]: 6 bytes
    assert added(merge, ["abc"]) == ["[1,22]"]  # ["abc" would make [1,22,"abc"]: 12
    assert added(merge, [4]) == []  # ["abc",4]: 9, the text counted as a JSON string
    assert merge.flush() == ['["abc",4]']
    assert added(merge, ["abcd", 5]) == ['["abcd",5]']  # exactly 10: out at once


@pytest.mark.parametrize("window", [-0.01, math.nan, math.inf, -math.inf, "0.05", True, None])
def test_a_bad_window_is_refused_in_one_line(window: Any) -> None:
    with pytest.raises(ValueError) as refused:
        Coalescer(window)
    reason = f"coalesce must be a non-negative finite number of seconds, not {window!r}"
    assert str(refused.value) == reason


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "16k"])
def test_a_bad_bound_is_refused_in_one_line(size: Any) -> None:
    with pytest.raises(ValueError) as refused:
        Coalescer(0.05, size)
    assert (
        str(refused.value) == f"coalesce_bytes must be a whole number of bytes from 1, not {size!r}"
    )


async def test_500_tokens_a_second_make_at_most_21_events_a_second_with_the_same_text() -> None:
    publisher, clock = FakeAsync(), FakeClock()
    publisher.clock = clock
    tokens = [f" wörd{n}🚀" if n % 7 else f"\nline {n}\r\n" for n in range(500)]

    async def model() -> AsyncIterator[str]:
        for n, token in enumerate(tokens):
            clock.now = n / 500  # a token every 2 ms: one second of a fast model
            await asyncio.sleep(0)  # the sender runs, and times the window, between tokens
            yield token

    ids = await publisher.stream("c", model(), coalesce=0.05)
    events = [p.data for p in publisher.log if p.event == "token"]
    assert len(events) <= 21, len(events)
    assert "".join(events).encode() == "".join(tokens).encode()
    assert publisher.log[-1].data == f'{{"chunks":500,"events":{len(events)}}}'
    assert len(ids) == len(events) + 1


def test_the_sync_stream_merges_500_tokens_a_second_alike() -> None:
    publisher, clock = FakeSync(), FakeClock()
    publisher.clock = clock
    tokens = [f" wörd{n}" for n in range(500)]

    def model() -> Iterator[str]:
        for n, token in enumerate(tokens):
            clock.now = n / 500  # (its sending thread times the window meanwhile)
            yield token

    publisher.stream("c", model(), coalesce=0.05)
    events = [p.data for p in publisher.log if p.event == "token"]
    assert len(events) <= 21, len(events)
    assert "".join(events).encode() == "".join(tokens).encode()
    assert publisher.log[-1].data == f'{{"chunks":500,"events":{len(events)}}}'


async def test_a_chunk_after_a_quiet_spell_goes_out_before_the_next_arrives() -> None:
    publisher = FakeAsync()

    async def model() -> AsyncIterator[str]:
        yield "first"
        # Quiet until "first" is published: only the window's timer can send it.
        await wait_until(lambda: len(publisher.log) == 1, 10, "the first chunk, alone")
        yield "second"

    await publisher.stream("c", model(), coalesce=0.05)
    assert [(p.event, p.data) for p in publisher.log] == [
        ("token", "first"),
        ("token", "second"),
        ("done", '{"chunks":2,"events":2}'),
    ]


def test_the_sync_stream_times_a_quiet_spell_too() -> None:
    publisher = FakeSync()

    def model() -> Iterator[str]:
        yield "first"
        wait_until_sync(lambda: len(publisher.log) == 1, 10, "the first chunk, alone")
        yield "second"

    publisher.stream("c", model(), coalesce=0.05)
    assert [p.data for p in publisher.log] == ["first", "second", '{"chunks":2,"events":2}']


async def stream(
    twin: str, source: Iterable[Any], **options: Any
) -> tuple[list[tuple[str, str]], Exception | None]:
    """(event, data) of what `source` published through the async or the sync `stream`,
    with time standing still (every chunk within one window), and what `stream` raised."""
    publisher = FakeAsync() if twin == "async" else FakeSync()
    publisher.clock = FakeClock()
    raised = None
    try:
        if isinstance(publisher, FakeAsync):
            await publisher.stream("c", source, **options)
        else:
            publisher.stream("c", source, **options)
    except Exception as failure:
        raised = failure
    return [(p.event or "", p.data) for p in publisher.log], raised


def failing(failure: Exception | None, *chunks: Any) -> Iterator[Any]:
    yield from chunks
    if failure is not None:
        raise failure


@pytest.mark.parametrize("twin", TWINS)
async def test_an_error_mid_stream_ends_with_error_after_the_merged_text(twin: str) -> None:
    published, raised = await stream(twin, failing(KeyError("gone"), "Hel", "lo"), coalesce=1)
    assert isinstance(raised, KeyError)
    assert published == [("token", "Hello"), ("error", "KeyError: 'gone'")]
    published, raised = await stream(twin, failing(None, "Hel", "lo", {1}), coalesce=1)
    assert isinstance(raised, ValueError)  # a chunk `publish` refuses fails the source
    assert published == [
        ("token", "Hello"),
        ("error", "ValueError: data is not JSON-serialisable: Type is not JSON serializable: set"),
    ]


@pytest.mark.parametrize("twin", TWINS)
async def test_a_stream_merges_by_the_one_rule(twin: str) -> None:
    assert await stream(twin, [{"a": 1}, "b", 2], coalesce=1, event="delta") == (
        [("delta", '[{"a":1},"b",2]'), ("done", '{"chunks":3,"events":1}')],
        None,
    )
    assert await stream(twin, ["ab", "cd", "ef", "g"], coalesce=1, coalesce_bytes=4) == (
        [("token", "abcd"), ("token", "efg"), ("done", '{"chunks":4,"events":2}')],
        None,
    )
    assert await stream(twin, [{"a": 1}, "b"]) == (  # the default: one event per chunk
        [("token", '{"a":1}'), ("token", "b"), ("done", '{"chunks":2}')],
        None,
    )


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"coalesce": -1}, "coalesce must be a non-negative finite number of seconds, not -1"),
        ({"coalesce": 1, "coalesce_bytes": 0}, "coalesce_bytes must be a whole number"),
    ],
)
async def test_bad_coalescing_is_refused_before_anything_is_sent(
    twin: str, options: dict[str, Any], reason: str
) -> None:
    published, raised = await stream(twin, ["a"], **options)
    assert isinstance(raised, ValueError) and str(raised).startswith(reason)
    assert published == []
