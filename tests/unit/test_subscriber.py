"""`broadcaster.client.subscriber`: `subscribe` and `subscribe_sync` (the engine of
`broadcaster subscribe`), each against the same scripted and silent servers: the parser,
the position, retries and refusals."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from itertools import islice
from typing import Any

import httpx
import pytest

from broadcaster.client.events import Event
from broadcaster.client.subscriber import subscribe, subscribe_sync
from broadcaster.client.subscription import SubscribeError, Subscription

Answer = Callable[[httpx.Request], httpx.Response]
KINDS = pytest.mark.parametrize("kind", ["async", "sync"])


def scripted(*answers: httpx.Response) -> tuple[Answer, list[httpx.Request]]:
    """A server whose requests get `answers` in turn; the requests are recorded."""
    requests: list[httpx.Request] = []
    pending = list(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return pending.pop(0)

    return answer, requests


class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that arrives in these chunks, to either client."""

    def __init__(self, chunks: tuple[bytes, ...]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


def stream(*chunks: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks(chunks))


def follow(
    kind: str,
    answer: Answer | None,
    count: int,
    *args: Any,
    sleep: Callable[[float], None] = lambda _: None,
    **options: Any,
) -> list[Event]:
    """The first `count` events that `subscribe` or `subscribe_sync` yields, from `answer`
    (a real server without one); `sleep` sees the delays between attempts."""
    if kind == "sync":
        client = None if answer is None else httpx.Client(transport=httpx.MockTransport(answer))
        events = subscribe_sync(*args, client=client, sleep=sleep, **options)
        try:
            return list(islice(events, count))
        finally:
            events.close()

    async def pause(delay: float) -> None:
        sleep(delay)

    async def take() -> list[Event]:
        transport = None if answer is None else httpx.MockTransport(answer)
        async with httpx.AsyncClient(transport=transport) as client:
            events = subscribe(*args, client=client, sleep=pause, **options)
            taken: list[Event] = []
            try:
                async for event in events:
                    taken.append(event)
                    if len(taken) == count:
                        break
            finally:
                await events.aclose()
            return taken

    return asyncio.run(take())


@KINDS
def test_only_events_with_data_come_out_and_every_block_moves_the_position(kind: str) -> None:
    answer, requests = scripted(
        stream(
            b"retry: 1500\n\n",  # a hint, not an event
            b"id: 1-1\ndata: a\n\n",
            b":\n\n:\n\n",  # heartbeats after an id: still nothing
            b"id: 1-2\nevent: note\ndata: x\ndata:\ndata:  y\n\n",
            b"data:\n\n",  # an event with empty data and no id of its own
            b"id: 9-9\n\n",  # a bare id: the position moves, no event
            b"id: 9-10\ndata: cut off with its connection",
        ),
        httpx.Response(
            503, headers={"content-type": "text/plain", "retry-after": "2"}, text="draining\n"
        ),
        stream(
            b"\xef\xbb\xbfid: 9-11\r\ndata: cr",
            b"lf\r",
            b"\n\r",
            b"\ndata: \xf0\x9f",
            b"\x9a\x80\n\n",
        ),
    )
    delays: list[float] = []
    notices: list[str] = []
    events = follow(
        kind,
        answer,
        5,
        "http://node/",
        ["a", "b"],
        last_event_id="0-1",
        token="t0ken",
        notify=notices.append,
        sleep=delays.append,
    )
    assert events == [
        Event("1-1", "message", "a"),
        Event("1-2", "note", "x\n\n y"),
        Event(None, "message", ""),
        Event("9-11", "message", "crlf"),
        Event(None, "message", "\U0001f680"),
    ]
    assert [str(r.url) for r in requests] == [
        "http://node/events?channel=a&channel=b&lastEventId=0-1"
    ] * 3
    assert [r.headers.get("last-event-id") for r in requests] == [None, "9-9", "9-9"]
    assert {r.headers["authorization"] for r in requests} == {"Bearer t0ken"}
    assert delays == [1.5, 2.0]  # the hint; then Retry-After, since it is longer
    assert notices == [
        "connection lost (the node ended the stream), retrying in 1.5 s",
        "cannot connect (503 draining), retrying in 2.0 s",
        "reconnected (resuming after 9-9)",
    ]


@KINDS
def test_an_empty_id_forgets_the_position(kind: str) -> None:
    answer, requests = scripted(
        stream(b"id: 5-5\ndata: x\n\n"),
        stream(b"id:\n\n"),
        stream(b"data: y\n\n"),
    )
    events = follow(kind, answer, 2, "http://node", ["a"], last_event_id="1-1")
    assert [e.data for e in events] == ["x", "y"]
    assert [r.headers.get("last-event-id") for r in requests] == [None, "5-5", None]
    assert all(r.url.params["lastEventId"] == "1-1" for r in requests)


class Enough(Exception):
    pass


@KINDS
def test_a_refusing_node_is_retried_ever_later_up_to_the_cap(kind: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    delays: list[float] = []

    def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 7:
            raise Enough

    notices: list[str] = []
    with pytest.raises(Enough):
        follow(kind, refuse, 1, "http://node", ["a"], notify=notices.append, sleep=sleep)
    assert delays == [3, 6, 12, 24, 30, 30, 30]
    assert notices[0] == "cannot connect (connection refused), retrying in 3.0 s"


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        ({"status_code": 401, "text": "missing token\n"}, 401, "missing token"),
        ({"status_code": 404, "html": "<html>nginx</html>"}, 404, "Not Found"),
        (
            {"status_code": 200, "text": "hello"},
            200,
            "not an event stream (Content-Type: text/plain)",
        ),
    ],
)
@KINDS
def test_refusals_retrying_cannot_fix_raise(
    kind: str, answer: dict[str, Any], status: int, reason: str
) -> None:
    server, requests = scripted(httpx.Response(**answer))
    with pytest.raises(SubscribeError) as refused:
        follow(kind, server, 1, "http://node", ["a"])
    assert (refused.value.status, refused.value.reason) == (status, reason)
    assert len(requests) == 1


def test_a_204_is_the_end_of_the_subscription_not_a_refusal() -> None:
    notices: list[str] = []
    session = Subscription(
        "http://node",
        ["a"],
        last_event_id="1-1",
        token=None,
        notify=notices.append,
        read_timeout=60,
        max_delay=30,
    )
    session.headers()
    assert not session.wants_body(204, {})
    assert session.accept(204, {}, "No Content", b"") is False
    assert notices == ["the channels are closed: nothing more will come"]


@KINDS
def test_a_204_ends_the_subscription_after_every_event(kind: str) -> None:
    answer, requests = scripted(
        stream(b"retry: 100\n\nid: 1-1\ndata: a\n\n", b"id: 1-2\nevent: done\ndata: {}\n\n"),
        httpx.Response(204),
    )
    delays: list[float] = []
    notices: list[str] = []
    events = follow(
        kind, answer, 10, "http://node", ["a"], notify=notices.append, sleep=delays.append
    )
    assert events == [Event("1-1", "message", "a"), Event("1-2", "done", "{}")]
    assert [r.headers.get("last-event-id") for r in requests] == [None, "1-2"]
    assert delays == [0.1]  # before the reconnect that got the 204; none after it
    assert notices == [
        "connection lost (the node ended the stream), retrying in 0.1 s",
        "the channels are closed: nothing more will come",
    ]
    # Answered 204 at once: it ends with nothing.
    answer, requests = scripted(httpx.Response(204))
    assert follow(kind, answer, 10, "http://node", ["a"], last_event_id="1-2") == []
    assert len(requests) == 1


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[bytes]]]:
    """A server whose first stream sends one event and then nothing at all; its second
    sends one more. Yields its URL and the requests it got."""
    requests: list[bytes] = []
    held: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 0\n\n"
        for body in (b"id: 1-1\ndata: a\n\n", b"id: 1-2\ndata: b\n\n"):
            connection, _ = listener.accept()
            held.append(connection)
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            requests.append(request)
            connection.sendall(head + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", requests
    finally:
        listener.close()
        thread.join(5)
        for connection in held:
            connection.close()


@KINDS
def test_a_silent_connection_counts_as_lost(
    kind: str, silent_server: tuple[str, list[bytes]]
) -> None:
    url, requests = silent_server
    notices: list[str] = []
    events = follow(kind, None, 2, url, ["a"], read_timeout=0.5, notify=notices.append)
    assert [e.data for e in events] == ["a", "b"]
    assert notices[0] == "connection lost (nothing received for 0.5 s), retrying in 0.0 s"
    assert b"\r\nlast-event-id: 1-1\r\n" in requests[1].lower()
