"""A node's answer to `GET /presence`, as values: what the async and sync HTTP publishers'
`presence` return, and what `broadcaster presence` prints back as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class PresenceClient:
    """An identified subscriber of the channel asked: its JWT `sub`, its `info` (any JSON,
    or None) and how many streams it holds open."""

    sub: str
    info: Any
    connections: int


@dataclass(frozen=True, slots=True)
class Presence:
    """Subscribers per channel (`counts`), counted over the `scope` (`cluster` with Redis,
    `node` on the embedded broker). With `clients=True`, a page of the channel's identified
    subscribers, and `next`, the cursor of the page after it (None: the last page);
    otherwise `clients` is None."""

    counts: dict[str, int]
    scope: str
    clients: tuple[PresenceClient, ...] | None = None
    next: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The node's answer again: `{"channels": ..., "scope": ...}`, with `clients` and
        `next` when they were asked."""
        answer: dict[str, Any] = {"channels": dict(self.counts), "scope": self.scope}
        if self.clients is not None:
            answer["clients"] = [
                {"sub": c.sub, "info": c.info, "connections": c.connections} for c in self.clients
            ]
            answer["next"] = self.next
        return answer


def presence_query(
    channels: str | Sequence[str],
    *,
    clients: bool = False,
    limit: int | None = None,
    after: str | None = None,
) -> tuple[tuple[str, str], ...]:
    """The query string of `GET /presence` for these arguments. Raises ValueError for no
    channel, `clients` of more than one, or `limit` or `after` without `clients`; the node
    checks the rest (names, how many, the bounds of `limit`)."""
    names = [channels] if isinstance(channels, str) else list(channels)
    if not names:
        raise ValueError("presence needs at least one channel")
    if clients and len(names) != 1:
        raise ValueError("presence lists the clients of one channel at a time")
    if not clients and (limit is not None or after is not None):
        raise ValueError("limit and after page the list of clients: ask for clients too")
    query = [("channel", name) for name in names]
    if clients:
        query.append(("clients", "1"))
    if limit is not None:
        query.append(("limit", str(limit)))
    if after is not None:
        query.append(("after", after))
    return tuple(query)


def parse_presence(body: bytes | str) -> Presence:
    """A `Presence` from a node's JSON answer; raises ValueError if it is not one."""
    try:
        answer = orjson.loads(body)
        counts = answer["channels"]
        scope = answer["scope"]
        clients = answer.get("clients")
        after = answer.get("next")
        if not (
            isinstance(counts, dict)
            and all(_is_int(count) for count in counts.values())
            and isinstance(scope, str)
            and (after is None or isinstance(after, str))
        ):
            raise TypeError(answer)
        return Presence(counts, scope, None if clients is None else _clients(clients), after)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        shown = body[:200] if isinstance(body, str) else body[:200].decode("utf-8", "replace")
        raise ValueError(f"not an answer of GET /presence: {shown!r}") from exc


def _clients(listed: Any) -> tuple[PresenceClient, ...]:
    if not isinstance(listed, list):
        raise TypeError(listed)
    found = []
    for client in listed:
        sub, connections = client["sub"], client["connections"]
        if not (isinstance(sub, str) and _is_int(connections)):
            raise TypeError(client)
        found.append(PresenceClient(sub, client.get("info"), connections))
    return tuple(found)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
