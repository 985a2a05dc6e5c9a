"""Node settings: environment variables prefixed BROADCASTER_, overridable by CLI flags."""

from __future__ import annotations

import difflib
import math
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from broadcaster.brokers.config import DEFAULT_CONFIG, LibraryConfig
from broadcaster.brokers.redis.client import check_url
from broadcaster.node.auth import load_public_key
from broadcaster.node.limits import parse_networks

_TOKEN = re.compile(r"[!-~]+")


class NodeSettings(BaseSettings):
    """Every setting of a node itself (its optional parts, like the demo, have their own;
    `broadcaster.Settings` holds them all). Each field's description is its documentation:
    the settings reference (docs/settings.md) and `broadcaster serve --help` are made from
    them."""

    model_config = SettingsConfigDict(env_prefix="BROADCASTER_", frozen=True, extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description=(
            "`redis://`, `rediss://` or `unix://` URL, with a password as "
            "`redis://:<password>@host:6379/0`; or "
            "`redis+sentinel://[[user]:password@]host:port[,host:port...]/<service>[/db]` to find "
            "the primary through Redis Sentinel (see [Redis high availability](availability.md)). "
            "`redis+cluster://[[user]:password@]host:port[,host:port...]` "
            "(`rediss+cluster://` with TLS) names seed nodes of a Redis Cluster; a `redis://` "
            "URL of a cluster node is detected too (see [Redis Cluster](redis-cluster.md)). "
            "When unset or empty, the node runs the embedded single-node broker."
        ),
    )
    host: str = Field(default="0.0.0.0", description="Address to listen on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port to listen on.")
    workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description=(
            "Node processes sharing the port (`SO_REUSEPORT`), 1 to 256, or `auto` for one per "
            "usable CPU. More than one needs Redis. See [Every core](workers.md)."
        ),
    )
    heartbeat_interval: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description=(
            "Seconds of silence on a stream before a heartbeat comment is sent (float; one shared "
            "timer checks four times per interval)."
        ),
    )
    retry_ms: int = Field(
        default=3000,
        ge=0,
        le=86_400_000,
        description="Reconnect delay hint sent to clients as `retry:`.",
    )
    channel_prefix: str = Field(
        default=DEFAULT_CONFIG.prefix,
        max_length=64,
        pattern=r"^[A-Za-z0-9\-_.:@/=]*$",
        description="Prefix of the Redis pub/sub channels: channel `news` is `sse:news` in Redis.",
    )
    node_id: str = Field(default="", description="This node's name, used in logs.")
    publish_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bearer token for `POST /publish` (visible ASCII, no spaces). When unset, HTTP publish"
            " is off (`403`). Set but empty refuses to start."
        ),
    )
    max_channels_per_connection: int = Field(
        default=16, ge=1, le=1024, description="Channels one `/events` connection may follow."
    )
    max_message_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=64 * 1_048_576,
        description="Largest accepted `POST /publish` body (larger gets `413`).",
    )
    max_pending_bytes: int = Field(
        default=1_048_576,
        ge=4096,
        description=(
            "Unsent bytes a client may leave queued before it is disconnected as slow (while it "
            "reads its replay: the live events waiting behind it too)."
        ),
    )
    max_replay_bytes: int = Field(
        default=4 * 1_048_576,
        ge=1024,
        description=(
            "Bytes of events one request may replay; past them it gets the newest part and a "
            "`trimmed` reset."
        ),
    )
    history_maxlen: int = Field(
        default=DEFAULT_CONFIG.history_maxlen,
        ge=1,
        le=10_000_000,
        description="Messages kept per channel for resume.",
    )
    history_ttl: int = Field(
        default=DEFAULT_CONFIG.history_ttl,
        ge=0,
        description=(
            "Seconds after its last publish that an idle channel's history expires, at the "
            "earliest (at most a tenth later, and at least a second: the expiry is refreshed "
            "once per tenth of it, not by every publish; `0`: never)."
        ),
    )
    idempotency_window: float = Field(
        default=DEFAULT_CONFIG.idempotency_window,
        gt=0,
        le=86400,
        description=(
            "Seconds a publish's idempotency key is remembered on its channel; a repeat within it "
            "answers the first id and publishes nothing."
        ),
    )
    publish_replicas: int = Field(
        default=DEFAULT_CONFIG.replicas,
        ge=0,
        le=64,
        description=(
            "Replicas that must hold a publish (`WAIT`) before it is acknowledged; "
            "see [Redis high availability](availability.md)."
        ),
    )
    publish_replica_timeout: float = Field(
        default=DEFAULT_CONFIG.replica_timeout,
        gt=0,
        le=60,
        description="Seconds to wait for them; a publish they do not confirm gets `503`.",
    )
    max_connections: int = Field(
        default=10_000,
        ge=1,
        description="Open streams per node; more get `503` with `Retry-After`.",
    )
    max_connections_per_ip: int = Field(
        default=0,
        ge=0,
        description="Open streams per client address; more get `429` with `Retry-After`.",
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "Comma-separated addresses or CIDRs of proxies whose `X-Forwarded-For` is believed."
        ),
    )
    overload_response: Literal["error", "retry"] = Field(
        default="error",
        description=(
            "`error`: refuse with 503/429. `retry`: answer 200 with a jittered `retry:` and close,"
            " so browsers come back later."
        ),
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        description=(
            "HS256 secret. When set (or a public key is), every subscription and HTTP publish "
            "needs a token. Set but empty (or blank) refuses to start: only unset means off."
        ),
    )
    jwt_public_key: str | None = Field(
        default=None,
        description=(
            "PEM public key, or `@path`, for RS256 (an RSA key) or ES256 (an EC key) tokens. "
            "Parsed at start: an empty, unreadable or broken key refuses to start. A token signed "
            "for the other key type gets `401`."
        ),
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "Comma-separated origins (`https://app.example.com`) allowed cross-origin, with "
            "credentials. `*` is refused."
        ),
    )
    max_connection_age: float = Field(
        default=0,
        ge=0,
        description=(
            "Seconds (±10% jitter) after which a stream ends with a jittered `retry:`, so clients "
            "rebalance over nodes."
        ),
    )
    token_expiry: Literal["end", "keep"] = Field(
        default="end",
        description=(
            "`end`: a stream opened with a JWT ends at the token's `exp` (within a second), with a"
            " jittered `retry:`, so the client reconnects with a fresh token. `keep`: it stays "
            "open."
        ),
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description=(
            "Seconds a request may take to send its headers, from its first byte (a new "
            "connection's first request: from the connection); slower ones (slowloris) get `408` "
            "and are closed, within 1.25 times this. Every request on a kept-alive connection is "
            "timed."
        ),
    )
    body_timeout: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description=(
            "Seconds a request may take to send its body (`POST /publish`, `POST /demo/ask`), once"
            " the checks that need no body (authentication, rights that reach no channel the "
            "endpoint serves, rate limits) have passed; slower ones get `408` and the connection "
            "closes within 2 s more. One client address may be sending at most 32 bodies at once; "
            "more get `429`."
        ),
    )
    presence_events: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "Comma-separated channel patterns (`*` wildcards, as in tokens) whose subscribers get"
            " a live-only `join` / `leave` event when an identified subscriber (a JWT with `sub`)"
            " opens its first connection to the channel, on any node, or closes its last. Set "
            "the same on every node."
        ),
    )
    shutdown_timeout: float = Field(
        default=10.0, gt=0, le=3600, description="Seconds a graceful stop may take."
    )
    log_level: str = Field(
        default="INFO", description="`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`."
    )
    log_format: Literal["plain", "json"] = Field(
        default="plain",
        description=(
            "`plain`, or `json` (one object per line: time, level, node, logger, message). Every "
            "line carries the node id."
        ),
    )
    access_log: Literal["on", "off", "all"] = Field(
        default="on",
        description=(
            "`on`: every request but `/events`; `all`: streams too (logged when they go live); "
            "`off`."
        ),
    )

    def library_config(self) -> LibraryConfig:
        """How messages are kept and acknowledged, as both brokers and the Redis publishers
        take it: the one place for the node, `broadcaster publish` and the demo producer."""
        return LibraryConfig(
            prefix=self.channel_prefix,
            history_maxlen=self.history_maxlen,
            history_ttl=self.history_ttl,
            idempotency_window=self.idempotency_window,
            replicas=self.publish_replicas,
            replica_timeout=self.publish_replica_timeout,
        )

    @field_validator("trusted_proxies", "cors_origins", "presence_events", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin == "*" or not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return tuple(origin.rstrip("/") for origin in value)

    @field_validator("jwt_public_key", mode="before")
    @classmethod
    def _public_key(cls, value: object) -> object:
        # A path is easier to pass around than a multi-line PEM in an environment variable.
        if isinstance(value, str) and value.startswith("@"):
            try:
                return Path(value[1:]).read_text()
            except OSError as exc:
                raise ValueError(f"cannot read {value[1:]}: {exc.strerror}") from None
        return value

    @field_validator("jwt_public_key")
    @classmethod
    def _parsed_key(cls, value: str | None) -> str | None:
        if value is not None:
            load_public_key(value)  # at start, not at the first token
        return value

    @field_validator("publish_token", "jwt_secret", "jwt_public_key", mode="before")
    @classmethod
    def _not_blank(cls, value: object) -> object:
        # Set but empty is a mistake (an unset ${VAR} in a compose file), not "off": it
        # would turn authentication off without a word.
        if isinstance(value, str) and not value.strip():
            raise ValueError("is set but empty: give a value, or unset it to turn this off")
        return value

    @field_validator("publish_token")
    @classmethod
    def _header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError(
                "may contain only visible ASCII without spaces (it is sent as a bearer token)"
            )
        return value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # Compose files and shells often export an empty variable to mean "unset".
        return None if value == "" else value

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: object) -> object:
        return cpu_count() if value == "auto" else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if any(c in value for c in "\r\n\0"):
            raise ValueError("must not contain CR, LF or NUL")
        return value

    @model_validator(mode="after")
    def _workers_need_redis(self) -> NodeSettings:
        if self.workers > 1 and self.redis_url is None:
            raise ValueError(
                f"{self.workers} workers need BROADCASTER_REDIS_URL: workers share nothing "
                "but Redis (the embedded broker lives in one process)"
            )
        return self

    @model_validator(mode="after")
    def _default_node_id(self) -> NodeSettings:
        if not self.node_id:
            # The model is frozen; this is its own construction step.
            object.__setattr__(self, "node_id", f"{socket.gethostname()}:{self.port}")
        return self


def cpu_count(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may run on: its affinity, where the system tells it, and no
    more than its cgroup's CPU quota rounded up (a container's CPU limit, which leaves the
    affinity at every core of the host)."""
    if hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
    else:
        usable = os.cpu_count() or 1
    quota = cpu_quota(cgroup)
    return max(1, min(usable, math.ceil(quota))) if quota is not None else usable


def cpu_quota(cgroup: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs' worth of time the cgroup may use (`cpu.max` of cgroup v2, or v1's CFS
    quota and period), or None when unlimited or unknown."""
    try:
        quota, _, period = (cgroup / "cpu.max").read_text().strip().partition(" ")
    except OSError:
        try:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        value, every = int(quota), int(period)
    except ValueError:  # "max": no limit
        return None
    return value / every if value > 0 and every > 0 else None


def setting_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return f"BROADCASTER_{field.upper()}"


# BROADCASTER_ variables that are not node settings: `broadcaster subscribe`'s token, and
# where examples/fastapi_chat publishes and where its page subscribes.
OTHER_VARIABLES = frozenset({"BROADCASTER_TOKEN", "BROADCASTER_URL", "BROADCASTER_PUBLIC_URL"})


def unknown_variables(environ: Mapping[str, str], settings: type[BaseSettings]) -> list[str]:
    """A warning for each BROADCASTER_ variable in `environ` that sets none of `settings`'
    fields (a typo is otherwise silently ignored), naming the closest setting."""
    fields = list(settings.model_fields)
    warnings = []
    for name in sorted(environ):
        prefix, _, field = name.partition("_")
        field = field.lower()
        if prefix != "BROADCASTER" or field in fields or name in OTHER_VARIABLES:
            continue
        closest = difflib.get_close_matches(field, fields, n=1)  # the prefix would flatter
        hint = f" (did you mean {setting_name(closest[0])}?)" if closest else ""
        warnings.append(f"{name} is not a setting{hint}; it is ignored")
    return warnings
