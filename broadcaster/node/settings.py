"""Node settings: environment variables prefixed BROADCASTER_, overridable by CLI flags."""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from broadcaster.brokers.redis.client import check_url
from broadcaster.node.auth import load_public_key
from broadcaster.node.limits import parse_networks

_TOKEN = re.compile(r"[!-~]+")


class Settings(BaseSettings):
    """Every setting of a node; see the README for what each one does."""

    model_config = SettingsConfigDict(env_prefix="BROADCASTER_", frozen=True, extra="ignore")

    redis_url: str | None = None
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    heartbeat_interval: float = Field(default=15.0, gt=0, le=3600)
    retry_ms: int = Field(default=3000, ge=0, le=86_400_000)
    channel_prefix: str = Field(default="sse:", max_length=64, pattern=r"^[A-Za-z0-9\-_.:@/=]*$")
    node_id: str = ""
    publish_token: SecretStr | None = None
    max_channels_per_connection: int = Field(default=16, ge=1, le=1024)
    max_message_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    max_pending_bytes: int = Field(default=1_048_576, ge=4096)
    max_replay_bytes: int = Field(default=4 * 1_048_576, ge=1024)
    history_maxlen: int = Field(default=1000, ge=1, le=10_000_000)
    history_ttl: int = Field(default=86400, ge=0)
    idempotency_window: float = Field(default=300, gt=0, le=86400)
    publish_replicas: int = Field(default=0, ge=0, le=64)
    publish_replica_timeout: float = Field(default=1.0, gt=0, le=60)
    max_connections: int = Field(default=10_000, ge=1)
    max_connections_per_ip: int = Field(default=0, ge=0)
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    overload_response: Literal["error", "retry"] = "error"
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    demo: Literal["auto", "on", "off"] = "auto"
    demo_token_delay: float = Field(default=0.05, ge=0, le=10)
    demo_prefix: str = Field(
        default="demo:", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-_.:@/=]+$"
    )
    demo_queue_max: int = Field(default=100, ge=1, le=100_000)
    demo_job_ttl: float = Field(default=60.0, gt=0, le=86400)
    demo_asks_per_minute: int = Field(default=10, ge=1, le=100_000)
    max_connection_age: float = Field(default=0, ge=0)
    token_expiry: Literal["end", "keep"] = "end"
    header_timeout: float = Field(default=10.0, gt=0, le=3600)
    body_timeout: float = Field(default=10.0, gt=0, le=3600)
    shutdown_timeout: float = Field(default=10.0, gt=0, le=3600)
    log_level: str = "INFO"
    log_format: Literal["plain", "json"] = "plain"
    access_log: Literal["on", "off", "all"] = "on"

    def library_options(self) -> dict[str, Any]:
        """The function library's settings, as `RedisBroker` and the Redis publishers take
        them: one place for the node, `broadcaster publish` and the demo producer."""
        return {
            "prefix": self.channel_prefix,
            "history_maxlen": self.history_maxlen,
            "history_ttl": self.history_ttl,
            "idempotency_window": self.idempotency_window,
            "replicas": self.publish_replicas,
            "replica_timeout": self.publish_replica_timeout,
        }

    @field_validator("trusted_proxies", "cors_origins", mode="before")
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
    def _workers_need_redis(self) -> Settings:
        if self.workers > 1 and self.redis_url is None:
            raise ValueError(
                f"{self.workers} workers need BROADCASTER_REDIS_URL: workers share nothing "
                "but Redis (the embedded broker lives in one process)"
            )
        return self

    @model_validator(mode="after")
    def _default_node_id(self) -> Settings:
        if not self.node_id:
            # The model is frozen; this is its own construction step.
            object.__setattr__(self, "node_id", f"{socket.gethostname()}:{self.port}")
        return self


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity, where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def setting_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return f"BROADCASTER_{field.upper()}"


# BROADCASTER_ variables that are not node settings: `broadcaster subscribe`'s token, and
# where examples/fastapi_chat publishes and where its page subscribes.
OTHER_VARIABLES = frozenset({"BROADCASTER_TOKEN", "BROADCASTER_URL", "BROADCASTER_PUBLIC_URL"})


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each BROADCASTER_ variable in `environ` that sets nothing (a typo is
    otherwise silently ignored), naming the closest setting."""
    fields = list(Settings.model_fields)
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
