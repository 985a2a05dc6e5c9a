"""The Redis Function libraries: durable publish (`FCALL sse_publish`, library.lua) and
paged replays (`FCALL_RO sse_replay_page`, replay.lua): their code, loading them, and
calling `sse_publish`. Every publisher and the node publish through here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeGuard

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from broadcaster.brokers.config import DEFAULT_CONFIG, LibraryConfig
from broadcaster.brokers.protocol import (
    CLOSED_REASON,
    IDEMPOTENCY_MAX_KEYS,
    KEY_LIMIT_REASON,
    ChannelClosed,
)
from broadcaster.brokers.redis.keys import KeySpace
from broadcaster.core.publication import Publication

AsyncClient = aioredis.Redis | aioredis.RedisCluster
SyncClient = redis.Redis | redis.RedisCluster

FUNCTION = "sse_publish"
BATCH = "sse_publish_batch"
SEEN = "sse_seen"
_SOURCE = resources.files(__package__).joinpath("library.lua").read_text("utf-8")
_REPLAY_SOURCE = resources.files(__package__).joinpath("replay.lua").read_text("utf-8")


@dataclass(frozen=True, slots=True)
class Library:
    """The libraries as `config` renders them: loading them, and publishing through them."""

    config: LibraryConfig = DEFAULT_CONFIG

    def code(self, source: str = _SOURCE) -> str:
        """The Lua source to load: `source` (library.lua's, unless a variant of it is
        measured: `loadtest.publish.variants`) rendered with the config."""
        config = self.config
        return (
            source.replace("{{prefix}}", config.prefix)
            .replace("{{maxlen}}", str(config.history_maxlen))
            .replace("{{ttl}}", str(config.history_ttl))
            .replace("{{ttl_slack}}", str(max(1, config.history_ttl // 10)))
            .replace(
                "{{idempotency_window_ms}}", str(max(1, round(config.idempotency_window * 1000)))
            )
            .replace("{{idempotency_max_keys}}", str(IDEMPOTENCY_MAX_KEYS))
            .replace("{{key_limit_reason}}", KEY_LIMIT_REASON)
            .replace("{{closed_reason}}", CLOSED_REASON)
        )

    async def load(self, client: AsyncClient, *, replace: bool) -> None:
        """Load the libraries; without `replace`, keep versions that are already there.
        NotReplicated if the primary refuses writes for want of replicas."""
        for code in (self.code(), _REPLAY_SOURCE):
            try:
                await client.function_load(code, replace=replace)
            except ResponseError as exc:
                _unless_loaded(exc, replace)

    async def report_seen(self, client: AsyncClient, seen: str, channel: str = "") -> None:
        """Tell this Redis the newest id a node delivered (`sse_seen`): on a promoted
        replica, a lost message some clients got is then told to resumes from before it.
        On a Redis Cluster, `channel` names the group the id belongs to."""
        if channel:
            await client.fcall(SEEN, 1, channel, seen)
        else:
            await client.fcall(SEEN, 0, seen)

    def load_sync(self, client: SyncClient, *, replace: bool) -> None:
        """`load`, for redis-py's synchronous client."""
        for code in (self.code(), _REPLAY_SOURCE):
            try:
                client.function_load(code, replace=replace)
            except ResponseError as exc:
                _unless_loaded(exc, replace)

    async def publish(self, client: AsyncClient, batch: Sequence[Publication]) -> list[str]:
        """Publish `batch` in order in one round trip (a pipeline of FCALLs); the ids.

        Loads the library first if this Redis lacks it. An error reply is raised
        (ChannelClosed for a closed channel's); so is NotReplicated when fewer than
        `replicas` replicas confirm in time.
        """
        keys = self._declared(client)
        replies, confirmed = await _fcall(client, batch, self._wait(), keys, batched=True)
        unloaded = [n for n, reply in enumerate(replies) if missing(reply)]
        if unloaded:
            # (A library loaded by an older release has no batch function: one by one.)
            await self.load(client, replace=False)
            retried = [batch[n] for n in unloaded]
            again, confirmed = await _fcall(client, retried, self._wait(), keys, batched=False)
            for n, reply in zip(unloaded, again, strict=True):
                replies[n] = reply
        return self._confirmed(replies, confirmed)

    def publish_sync(self, client: SyncClient, batch: Sequence[Publication]) -> list[str]:
        """`publish`, for redis-py's synchronous client."""
        keys = self._declared(client)
        replies, confirmed = _fcall_sync(client, batch, self._wait(), keys, batched=True)
        unloaded = [n for n, reply in enumerate(replies) if missing(reply)]
        if unloaded:
            self.load_sync(client, replace=False)
            retried = [batch[n] for n in unloaded]
            again, confirmed = _fcall_sync(client, retried, self._wait(), keys, batched=False)
            for n, reply in zip(unloaded, again, strict=True):
                replies[n] = reply
        return self._confirmed(replies, confirmed)

    def _declared(self, client: AsyncClient | SyncClient) -> KeySpace | None:
        """On a Redis Cluster, the names of the keys each call declares (a migrating slot
        lets a call run only where all of them are); elsewhere the channel alone."""
        return KeySpace(self.config.prefix, clustered=True) if _clustered(client) else None

    def _wait(self) -> list[int] | None:
        """The WAIT that closes each pipeline, when replicas must confirm."""
        config = self.config
        if not config.replicas:
            return None
        return [config.replicas, max(1, round(config.replica_timeout * 1000))]

    def _confirmed(self, replies: list[Any], confirmed: Any) -> list[str]:
        ids = _ids(replies)
        config = self.config
        if confirmed is not None and int(confirmed) < config.replicas:
            raise NotReplicated(
                f"{confirmed} of {config.replicas} replicas confirmed within "
                f"{config.replica_timeout:g} s: the message may or may not be delivered; "
                "retry with the same idempotency key"
            )
        return ids


class NotReplicated(RedisError):
    """Fewer replicas than required confirmed a publish in time (it may still arrive), or
    the primary refused it for want of replicas (`min-replicas-to-write`)."""


def fcall_args(publication: Publication, keys: KeySpace | None = None) -> tuple[int, list[str]]:
    """`FCALL sse_publish` arguments: the key count; <channel> (and, with `keys`, every
    key the call touches, declared), <data> [<event> [<idempotency-key> [<flags>]]]."""
    key = publication.idempotency_key
    declared = [] if keys is None else keys.touched(publication.channel, key)
    args = [publication.channel, *declared, publication.data]
    flags = publication.flags
    if flags:
        args += [publication.event or "", key or "", flags]
    elif key is not None:
        args += [publication.event or "", key]
    elif publication.event:
        args.append(publication.event)
    return 1 + len(declared), args


Replies = tuple[list[Any], Any]  # each FCALL's reply; the WAIT's (None without one)


BATCH_CALL = 200
"""Messages one `FCALL sse_publish_batch` carries at most (so Redis runs none for long)."""


async def _fcall(
    client: AsyncClient,
    batch: Sequence[Publication],
    wait: list[int] | None,
    keys: KeySpace | None,
    *,
    batched: bool,
) -> Replies:
    async with client.pipeline(transaction=False) as pipe:
        calls = _queue_calls(pipe, batch, keys, batched=batched)
        shards = _queue_waits(pipe, client, batch, wait)
        replies = list(await pipe.execute(raise_on_error=False))
    return _split(_spread(replies, calls), len(shards), _moved(client, batch, shards))


def _fcall_sync(
    client: SyncClient,
    batch: Sequence[Publication],
    wait: list[int] | None,
    keys: KeySpace | None,
    *,
    batched: bool,
) -> Replies:
    with client.pipeline(transaction=False) as pipe:
        calls = _queue_calls(pipe, batch, keys, batched=batched)
        shards = _queue_waits(pipe, client, batch, wait)
        replies = list(pipe.execute(raise_on_error=False))
    return _split(_spread(replies, calls), len(shards), _moved(client, batch, shards))


def _queue_calls(
    pipe: Any, batch: Sequence[Publication], keys: KeySpace | None, *, batched: bool
) -> list[int]:
    """Queue the batch's calls: on one Redis, `sse_publish_batch` calls of up to
    BATCH_CALL messages (when `batched`, and there are several), each keyed by a call key
    instead of its messages' retry keys (a key per call costs Redis two commands, a key
    per message two each); else one FCALL each (on a Redis Cluster each declares its
    keys). How many messages each call carries."""
    if not batched or keys is not None or len(batch) < 2:
        for publication in batch:
            count, args = fcall_args(publication, keys)
            pipe.fcall(FUNCTION, count, *args)
        return [1] * len(batch)
    calls = []
    for start in range(0, len(batch), BATCH_CALL):
        part = batch[start : start + BATCH_CALL]
        flat: list[str] = []
        for publication in part:
            event, key = publication.event or "", publication.idempotency_key or ""
            flat += [
                publication.channel,
                publication.data,
                event,
                "" if publication.retry_key else key,
                publication.flags,
            ]
        pipe.fcall(BATCH, 1, part[0].channel, len(part), _call_key(part), *flat)
        calls.append(len(part))
    return calls


def _call_key(part: Sequence[Publication]) -> str:
    """The key of a batch call that stands for its messages' retry keys (a retry splits
    the same batch into the same calls), or "" if none has one: the first of them, and
    how many messages the call holds."""
    for publication in part:
        if publication.retry_key:
            return f"{publication.idempotency_key}+{len(part)}"
    return ""


def _spread(replies: list[Any], calls: list[int]) -> list[Any]:
    """One reply per message: a batch call's list of ids (or errors), or its one error
    for each of its messages; the WAITs' replies after them, as they came."""
    spread: list[Any] = []
    for reply, count in zip(replies, calls, strict=False):
        if count > 1 or isinstance(reply, list):
            spread += reply if isinstance(reply, list) else [reply] * count
        else:
            spread.append(reply)
    return spread + replies[len(calls) :]


def _queue_waits(
    pipe: Any,
    client: AsyncClient | SyncClient,
    batch: Sequence[Publication],
    wait: list[int] | None,
) -> list[Any]:
    """Queue the WAITs that close the pipeline: one on the connection that carried the
    FCALLs (it counts replicas past that connection's own writes), or, on a Redis
    Cluster, one on each primary the batch went to. The places waited on."""
    if wait is None:
        return []
    if _clustered(client):
        shards = {node.name: node for node in (_primary(client, p.channel) for p in batch)}
        for node in shards.values():
            pipe.execute_command("WAIT", *wait, target_nodes=node)
        return list(shards.values())
    pipe.execute_command("WAIT", *wait)
    return [None]


def _clustered(
    client: AsyncClient | SyncClient,
) -> TypeGuard[aioredis.RedisCluster | redis.RedisCluster]:
    """Whether `client` speaks to a Redis Cluster."""
    return isinstance(client, aioredis.RedisCluster | redis.RedisCluster)


def _primary(client: aioredis.RedisCluster | redis.RedisCluster, channel: str) -> Any:
    node = client.get_node_from_key(channel)
    if node is None:
        raise NotReplicated(f"no shard serves {channel!r} now: retry")
    return node


def _moved(
    client: AsyncClient | SyncClient, batch: Sequence[Publication], shards: list[Any]
) -> bool:
    """Whether a channel's slot moved while the batch was sent (redis-py followed the
    redirection, and read the slot map again): the WAITs may not cover that publish."""
    if shards and _clustered(client):
        names = {node.name for node in shards}
        return any(_primary(client, p.channel).name not in names for p in batch)
    return False


def _split(replies: list[Any], waits: int, moved: bool) -> Replies:
    """The FCALLs' replies, and the fewest replicas any WAIT counted (None without one)."""
    if not waits:
        return replies, None
    confirmed = replies[-waits:]
    del replies[-waits:]
    for reply in confirmed:
        if isinstance(reply, Exception):
            raise reply
    return replies, 0 if moved else min(int(reply) for reply in confirmed)


def _refused(error: ResponseError) -> NotReplicated:
    return NotReplicated(
        f"redis refused the publish: {error} (an isolated primary, or replicas catching "
        "up after a failover): nothing was published; retry"
    )


def too_few_replicas(error: ResponseError) -> bool:
    """Whether Redis refused a write for `min-replicas-to-write` (a passing state)."""
    return str(error).startswith("NOREPLICAS")


def missing(reply: Any) -> bool:
    """Whether `reply` says the function is not loaded on this Redis (yet, or any more)."""
    return isinstance(reply, ResponseError) and "Function not found" in str(reply)


def _ids(replies: list[Any]) -> list[str]:
    for reply in replies:
        if isinstance(reply, ResponseError) and too_few_replicas(reply):
            raise _refused(reply)
        if isinstance(reply, ResponseError) and CLOSED_REASON in str(reply):
            raise ChannelClosed(CLOSED_REASON)
        if isinstance(reply, Exception):
            raise reply
    return [reply.decode() if isinstance(reply, bytes) else str(reply) for reply in replies]


def _unless_loaded(exc: ResponseError, replace: bool) -> None:
    if too_few_replicas(exc):
        raise _refused(exc) from None
    if replace or "already exists" not in str(exc):
        raise exc
