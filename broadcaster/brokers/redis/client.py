"""Every Redis client the package opens, in one place: its options, and where the primary
is: at the URL's address, or wherever Redis Sentinel says it is now.

`redis+sentinel://[[user]:password@]host:port[,host:port...]/<service>[/db]` asks the
Sentinels for the primary of `service`, on every new connection: after a failover,
connections reconnect to the promoted replica by themselves. The URL's credentials are
the Redis servers'. Sentinels that require a password of their own get it from the
query: `?sentinel_password=...` (and `sentinel_username=...`).

`redis+cluster://[[user]:password@]host:port[,host:port...]` (`rediss+cluster://` with
TLS) names seed nodes of a Redis Cluster: publishers learn the slot map from them and
follow it (`connect_publisher`); nodes also open a plain client on each primary
(`connect_cluster`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import ClusterNode
from redis.exceptions import RedisError
from redis.sentinel import Sentinel

# Failures that end a pub/sub session or a publish (redis-py wraps socket errors in
# RedisError subclasses; OSError covers the rest); anything else is a bug and propagates.
LINK_ERRORS = (RedisError, OSError)

IN_FLIGHT = 64
"""Commands a node sends through its connection pool at once; more wait their turn.
redis-py's pool opens at most 100 connections and refuses past them ("Too many
connections") rather than queueing, which turned 200 concurrent replays into errors."""

# RESP2, not redis-py's RESP3 default: Redis types a RESP3 subscriber as `normal`, so
# `CLIENT KILL TYPE pubsub` and the pub/sub output-buffer limit would not apply to it.
OPTIONS: dict[str, Any] = {"socket_connect_timeout": 5, "protocol": 2}
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME, *CLUSTER_SCHEMES)
ENCODE = "percent-encode any / @ : ? # in the password"


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """A parsed `redis+sentinel://` URL."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_auth: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """Parse `url`; raises ValueError saying what is wrong."""
        parts = urlsplit(url)
        if parts.scheme != SENTINEL_SCHEME:
            raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
        credentials, _, hosts = parts.netloc.rpartition("@")
        sentinels = [_address(host) for host in hosts.split(",") if host]
        if not sentinels:
            raise ValueError("name at least one Sentinel: redis+sentinel://host:port/service")
        path = [unquote(p) for p in parts.path.split("/") if p]
        if not path or len(path) > 2:
            raise ValueError("the path is /<service> or /<service>/<db>")
        if len(path) == 2 and not path[1].isdigit():
            raise ValueError(f"the database must be a number ({ENCODE})")
        username, _, password = credentials.partition(":")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"sentinel_password", "sentinel_username"}
        if unknown:
            raise ValueError(f"unknown query parameter {sorted(unknown)[0]!r}")
        sentinel_auth = {
            name: query[f"sentinel_{name}"]
            for name in ("username", "password")
            if f"sentinel_{name}" in query
        }
        return cls(
            sentinels,
            path[0],
            int(path[1]) if len(path) == 2 else 0,
            unquote(username) or None,
            unquote(password) or None,
            sentinel_auth,
        )

    def server_options(self) -> dict[str, Any]:
        """Options for connections to the Redis servers (the primary)."""
        return {**OPTIONS, "db": self.db, "username": self.username, "password": self.password}

    def sentinel_options(self) -> dict[str, Any]:
        """Options for connections to the Sentinels."""
        return {"socket_connect_timeout": OPTIONS["socket_connect_timeout"], **self.sentinel_auth}


@dataclass(frozen=True, slots=True)
class ClusterURL:
    """A parsed `redis+cluster://` (or `rediss+cluster://`) URL."""

    seeds: list[tuple[str, int]]
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> ClusterURL:
        """Parse `url`; raises ValueError saying what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in CLUSTER_SCHEMES:
            raise ValueError("not a redis+cluster:// URL")
        credentials, _, hosts = parts.netloc.rpartition("@")
        seeds = [_address(host, "a seed node") for host in hosts.split(",") if host]
        if not seeds:
            raise ValueError("name at least one node: redis+cluster://host:port[,host:port]")
        if parts.path.strip("/") or parts.query:
            raise ValueError("a Redis Cluster has no database or options in its URL")
        username, _, password = credentials.partition(":")
        tls = parts.scheme == "rediss+cluster"
        return cls(seeds, tls, unquote(username) or None, unquote(password) or None)


def check_url(url: str) -> str:
    """Return `url` if a client can be made from it, else raise ValueError with the reason.

    The reason never quotes the URL: a password with an unencoded `/` or `@` shifts every
    part, and a quoted part would hold a piece of it.
    """
    scheme = url.partition("://")[0]
    if scheme not in SCHEMES or "://" not in url:
        raise ValueError(
            "must start with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://"
        )
    if scheme == SENTINEL_SCHEME:
        SentinelURL.parse(url)
    elif scheme in CLUSTER_SCHEMES:
        ClusterURL.parse(url)
    elif scheme != "unix":
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 (parsing it is the check)
        except ValueError:
            raise ValueError(f"the port is not a number ({ENCODE})") from None
        if not parts.hostname:
            raise ValueError(f"name the host: {scheme}://[:password@]host:6379/0 ({ENCODE})")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ValueError(f"the path must be a database number ({ENCODE})")
    return url


CLUSTER_UNSUPPORTED = "a Redis Cluster needs a cluster client: use connect_publisher"
NodeClient = Callable[[str, int], aioredis.Redis]
"""A plain client for one node of a Redis Cluster, at host and port."""


def is_cluster(url: str | None) -> bool:
    """Whether `url` names a Redis Cluster (`redis+cluster://`, `rediss+cluster://`)."""
    return url is not None and url.partition("://")[0] in CLUSTER_SCHEMES


def detect_cluster(url: str) -> str:
    """`url`, or, when a `redis://` or `rediss://` URL names a node of a Redis Cluster,
    the `redis+cluster://` URL with that node as its seed. Asks the server once (`INFO
    cluster`, a blocking call made when a client is set up); a server out of reach is
    taken for what its URL says."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return url
    try:
        with redis.Redis.from_url(url, **OPTIONS) as probe:
            info = probe.info("cluster")
    except (RedisError, OSError):
        return url
    if not info.get("cluster_enabled"):
        return url
    return f"{parts.scheme}+cluster://{parts.netloc}"  # (a cluster has database 0 only)


def connect(url: str) -> aioredis.Redis:
    """An asyncio client (a lazy connection pool) for the primary at `url`."""
    if is_cluster(url):
        raise ValueError(CLUSTER_UNSUPPORTED)
    if url.startswith(SENTINEL_SCHEME + "://"):
        parsed = SentinelURL.parse(url)
        sentinel = AsyncSentinel(parsed.sentinels, sentinel_kwargs=parsed.sentinel_options())
        return cast(aioredis.Redis, sentinel.master_for(parsed.service, **parsed.server_options()))
    return aioredis.Redis.from_url(url, **OPTIONS)


def connect_sync(url: str) -> redis.Redis:
    """A synchronous, thread-safe client (a lazy connection pool) for the primary at `url`."""
    if is_cluster(url):
        raise ValueError(CLUSTER_UNSUPPORTED)
    if url.startswith(SENTINEL_SCHEME + "://"):
        parsed = SentinelURL.parse(url)
        sentinel = Sentinel(parsed.sentinels, sentinel_kwargs=parsed.sentinel_options())
        return cast(redis.Redis, sentinel.master_for(parsed.service, **parsed.server_options()))
    return redis.Redis.from_url(url, **OPTIONS)


def connect_publisher(url: str) -> aioredis.Redis | aioredis.RedisCluster:
    """An asyncio client for publishing at `url`: on a Redis Cluster (`redis+cluster://`,
    or a node's address: `detect_cluster`), one that follows the slot map (`FUNCTION
    LOAD` goes to every primary, each `FCALL` to its channel's)."""
    url = detect_cluster(url)
    if not is_cluster(url):
        return connect(url)
    parsed = ClusterURL.parse(url)
    nodes = [AsyncClusterNode(host, port) for host, port in parsed.seeds]
    return aioredis.RedisCluster(startup_nodes=nodes, **parsed_options(parsed))


def connect_cluster(url: str) -> tuple[aioredis.RedisCluster, NodeClient]:
    """For a node on the Redis Cluster at `url` (`redis+cluster://`): a client that
    follows the slot map, and a way to open a plain client on one of its nodes (with the
    same credentials)."""
    cluster = connect_publisher(url)
    if not isinstance(cluster, aioredis.RedisCluster):
        raise ValueError("not a redis+cluster:// URL")
    options = parsed_options(ClusterURL.parse(url))

    def node(host: str, port: int) -> aioredis.Redis:
        return aioredis.Redis(host=host, port=port, **options)

    return cluster, node


def connect_publisher_sync(url: str) -> redis.Redis | redis.RedisCluster:
    """`connect_publisher`, with redis-py's synchronous, thread-safe client."""
    url = detect_cluster(url)
    if not is_cluster(url):
        return connect_sync(url)
    parsed = ClusterURL.parse(url)
    nodes = [ClusterNode(host, port) for host, port in parsed.seeds]  # type: ignore[no-untyped-call]
    return redis.RedisCluster(startup_nodes=nodes, **parsed_options(parsed))


def parsed_options(parsed: ClusterURL) -> dict[str, Any]:
    """Options for the connections to a Redis Cluster's nodes."""
    auth = {"username": parsed.username, "password": parsed.password}
    return {**OPTIONS, **auth, **({"ssl": True} if parsed.tls else {})}


def redacted(url: str) -> str:
    """`url` without its password (or Sentinel password), for logs: everything up to the
    last `@` goes, so an unencoded `/`, `@` or `:` in a password hides no piece of it."""
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    path, question, query = rest.partition("?")
    if question:
        query = "&".join(
            f"{k}=***" if k.startswith("sentinel_") else f"{k}={v}"
            for k, _, v in (pair.partition("=") for pair in query.split("&"))
        )
    return f"{scheme}://{path}{question}{query}"


def _address(host: str, what: str = "a Sentinel") -> tuple[str, int]:
    name, colon, port = host.rpartition(":")
    if not colon or not port.isdigit() or not name:
        raise ValueError(f"{what} address is not host:port ({ENCODE})")
    return name.strip("[]"), int(port)
