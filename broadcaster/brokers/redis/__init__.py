"""Redis as the broker: one module per concept.

`client.py` (client options), `library.py` + `library.lua` (the `sse_publish` Redis
Function, loading and calling it), `replay.lua` + `pages.py` (replays read a page at a
time), `history.py` (atomic history reads), `link.py` (the pub/sub link's protocol),
`replays.py` (shared replay reads), `broker.py` (the broker session: reconnects and
backfill).
"""

from broadcaster.brokers.redis.broker import RedisBroker
from broadcaster.brokers.redis.client import LINK_ERRORS, connect, connect_sync
from broadcaster.brokers.redis.library import Library

__all__ = ["LINK_ERRORS", "Library", "RedisBroker", "connect", "connect_sync"]
