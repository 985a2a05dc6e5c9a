"""`broadcaster.client.presence`: the query a `presence()` sends, and the answer it reads
back (and gives back as the same JSON)."""

from __future__ import annotations

import orjson
import pytest

from broadcaster import Presence, PresenceClient
from broadcaster.client.presence import parse_presence, presence_query


def test_the_query_names_each_channel_and_pages_clients() -> None:
    assert presence_query("a") == (("channel", "a"),)
    assert presence_query(["a", "b"]) == (("channel", "a"), ("channel", "b"))
    assert presence_query(["a"], clients=True) == (("channel", "a"), ("clients", "1"))
    assert presence_query("a", clients=True, limit=10, after="ana") == (
        ("channel", "a"),
        ("clients", "1"),
        ("limit", "10"),
        ("after", "ana"),
    )


@pytest.mark.parametrize(
    ("channels", "options", "reason"),
    [
        ([], {}, "at least one channel"),
        (["a", "b"], {"clients": True}, "one channel at a time"),
        ("a", {"limit": 1}, "ask for clients too"),
        ("a", {"after": "x"}, "ask for clients too"),
    ],
)
def test_a_query_the_node_would_refuse_anyway_is_a_value_error(
    channels: list[str] | str, options: dict[str, object], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        presence_query(channels, **options)  # type: ignore[arg-type]


def test_counts_alone_read_and_give_back_the_same_json() -> None:
    answer = {"channels": {"a": 3, "b": 0}, "scope": "cluster"}
    presence = parse_presence(orjson.dumps(answer))
    assert presence == Presence({"a": 3, "b": 0}, "cluster", None, None)
    assert presence.as_json() == answer


def test_a_page_of_clients_reads_and_gives_back_the_same_json() -> None:
    answer = {
        "channels": {"room": 3},
        "scope": "node",
        "clients": [
            {"sub": "ana", "info": {"name": "Ana"}, "connections": 2},
            {"sub": "bob", "info": None, "connections": 1},
        ],
        "next": "bob",
    }
    presence = parse_presence(orjson.dumps(answer).decode())
    assert presence.clients == (
        PresenceClient("ana", {"name": "Ana"}, 2),
        PresenceClient("bob", None, 1),
    )
    assert presence.next == "bob"
    assert presence.as_json() == answer
    last = parse_presence(orjson.dumps({**answer, "clients": [], "next": None}))
    assert (last.clients, last.next) == ((), None)
    assert last.as_json()["next"] is None


@pytest.mark.parametrize(
    "body",
    [
        b"<html>bad gateway</html>",
        b"[]",
        b'{"channels": {"a": 1}}',
        b'{"channels": {"a": "1"}, "scope": "node"}',
        b'{"channels": {"a": true}, "scope": "node"}',
        b'{"channels": [], "scope": "node"}',
        b'{"channels": {}, "scope": "node", "clients": {}}',
        b'{"channels": {}, "scope": "node", "clients": [{"sub": 1, "connections": 1}]}',
        b'{"channels": {}, "scope": "node", "clients": [{"sub": "a"}]}',
        b'{"channels": {}, "scope": "node", "clients": [], "next": 3}',
    ],
)
def test_anything_else_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match="not an answer of GET /presence"):
        parse_presence(body)
