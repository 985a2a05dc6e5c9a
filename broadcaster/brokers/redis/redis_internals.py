"""Every use of redis-py beyond its public API, in one place, checked at import.

The pub/sub link (link.py) owns its connection's protocol: it writes SUBSCRIBE, PING and
UNSUBSCRIBE to the socket and parses replies with hiredis itself, since redis-py's
`send_command` wraps each write in `asyncio.wait_for` (which in Python 3.11 can swallow
a cancellation and hang a node's shutdown) and its `read_response` costs an await chain
and a timeout per message. For that it needs the connection's asyncio streams, which
redis-py keeps in `_reader` and `_writer`. On a Redis Cluster, the sharded links
(shards.py) read the slot map again through the cluster client's `nodes_manager`.

The range below is the one the suite tests (pyproject.toml bounds redis-py to it). On
another release a node refuses to start, naming the range.
"""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import ConnectionError as RedisConnectionError

SUPPORTED = ((8, 2), (8, 3))
"""redis-py releases whose internals this module was written and tested against: from
the first, up to (not including) the second."""


def check(version: str) -> None:
    """Raise ImportError, naming the supported releases, unless `version` is one."""
    found = tuple(int(part) for part in version.split(".")[:2])
    low, high = (".".join(map(str, bound)) for bound in SUPPORTED)
    connection = Connection()
    if not SUPPORTED[0] <= found < SUPPORTED[1] or not (
        hasattr(connection, "_reader") and hasattr(connection, "_writer")
    ):
        raise ImportError(
            f"broadcaster needs redis-py >={low},<{high} (it relies on internals of those"
            f" releases); this is redis-py {version}: pip install 'redis[hiredis]>={low},<{high}'"
        )


check(redis.__version__)


def streams(conn: AbstractConnection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The socket streams of a connected connection, which its caller reads and writes
    directly from then on; raises ConnectionError if it is not connected."""
    reader, writer = conn._reader, conn._writer
    if reader is None or writer is None:
        raise RedisConnectionError("pub/sub connection closed")
    return reader, writer


async def refresh_slots(cluster: redis.asyncio.RedisCluster) -> None:
    """Read a Redis Cluster's slot map again (after a slot moved, or a shard failed over):
    redis-py does it by itself only when a command of its own meets a MOVED."""
    await cluster.nodes_manager.initialize()
