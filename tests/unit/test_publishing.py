"""Publications, and the publishers' shared logic (keys, retries, stream batching),
over a fake transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broadcaster import Publication
from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.brokers.redis.library import fcall_args
from broadcaster.core.publication import check_key, encode_data
from tests.support.publishers import FakeAsync, FakeSync, Flaky


def test_data_is_serialised_once_as_text() -> None:
    assert encode_data("é\r\nx") == "é\r\nx"
    assert encode_data("é".encode()) == "é"
    assert encode_data(bytearray(b"ok")) == "ok"
    assert encode_data({"a": [1, None, 2.5]}) == '{"a":[1,null,2.5]}'
    assert encode_data(None) == "null"
    with pytest.raises(ValueError, match="not UTF-8"):
        encode_data(b"\xff")
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        encode_data({1, 2})


@pytest.mark.parametrize("key", ["a", "order-17:paid", "x" * 255, "py-AbC_d=+/.@"])
def test_valid_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 256, "a b", "é", "a\nb", '"quoted"'])
def test_invalid_keys(key: str) -> None:
    with pytest.raises(ValueError, match="idempotency key must be 1 to 255"):
        check_key(key)


def test_fcall_arguments() -> None:
    assert fcall_args(Publication("c", "d")) == (1, ["c", "d"])
    assert fcall_args(Publication("c", "d", "e")) == (1, ["c", "d", "e"])
    assert fcall_args(Publication("c", "d", None, "k")) == (1, ["c", "d", "", "k"])
    assert fcall_args(Publication("c", "d", "e", "k")) == (1, ["c", "d", "e", "k"])
    # On a Redis Cluster every key the call touches is declared after the channel.
    keys = KeySpace("sse:", clustered=True)
    assert fcall_args(Publication("{g}c", "d"), keys) == (
        4,
        ["{g}c", "sse:{g}:meta", "sse:{g}:history:{g}c", "sse:{g}:gaps", "d"],
    )
    count, args = fcall_args(Publication("c", "d", None, "k"), keys)
    assert count == 6 and args[4:6] == ["sse:{c}:idemcount:c", "sse:{c}:idem:c k"]


async def test_a_lost_reply_is_retried_with_the_same_keys() -> None:
    publisher = FakeAsync(lose=2)
    ids = await publisher.publish_many([("c", "a"), ("c", "b")])
    assert ids == ["1-1", "1-2"] and len(publisher.log) == 2, "three sends, two publishes"
    assert publisher.batches == [2, 2, 2]
    keys = [p.idempotency_key for p in publisher.log]
    assert all(keys) and len(set(keys)) == 2


async def test_retries_give_up_after_the_last_attempt() -> None:
    with pytest.raises(Flaky):
        await FakeAsync(lose=5, retries=2).publish("c", "x")


async def test_without_retries_no_key_is_added() -> None:
    publisher = FakeAsync(retries=0)
    await publisher.publish("c", "x")
    await publisher.publish("c", "y", idempotency_key="mine")
    assert [p.idempotency_key for p in publisher.log] == [None, "mine"]


async def test_a_fast_source_is_batched_not_sent_a_round_trip_per_chunk() -> None:
    publisher = FakeAsync(latency=0.01)  # every send takes a simulated round trip
    ids = await publisher.stream("c", (f"t{n}" for n in range(500)))
    assert len(ids) == 501
    assert [p.data for p in publisher.log][-2:] == ["t499", '{"chunks":500}']
    assert len(publisher.batches) <= 3, publisher.batches


async def test_a_stream_waits_for_the_sender_when_far_ahead() -> None:
    publisher = FakeAsync(latency=0.001)

    async def endless_but_bounded() -> AsyncIterator[int]:
        for n in range(5000):
            yield n

    ids = await publisher.stream("c", endless_but_bounded())
    assert len(ids) == 5001 and max(publisher.batches) <= 1000


async def test_a_failing_sender_stops_the_stream_with_its_error() -> None:
    publisher = FakeAsync(lose=10, retries=0)
    with pytest.raises(Flaky):
        await publisher.stream("c", iter(["a", "b"]))


def test_the_sync_stream_sends_from_a_thread_in_order() -> None:
    publisher = FakeSync()
    ids = publisher.stream("c", (n for n in range(2000)), event="delta", done_event="end")
    assert len(ids) == 2001
    assert [p.data for p in publisher.log] == [str(n) for n in range(2000)] + ['{"chunks":2000}']
    assert {p.event for p in publisher.log} == {"delta", "end"}


def test_the_sync_stream_ends_with_error_and_reraises() -> None:
    publisher = FakeSync()

    def source() -> object:
        yield "a"
        raise KeyError("gone")

    with pytest.raises(KeyError):
        publisher.stream("c", source())  # type: ignore[arg-type]
    assert [(p.event, p.data) for p in publisher.log] == [
        ("token", "a"),
        ("error", "KeyError: 'gone'"),
    ]
