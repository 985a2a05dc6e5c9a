"""Settings from the environment and `serve` flags, shared by the commands."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from pydantic import ValidationError

from broadcaster.node.settings import Settings, setting_name, unknown_variables

log = logging.getLogger("broadcaster.node.settings")

# `serve` flags: each overrides the BROADCASTER_ variable of the same name.
SERVE_FLAGS: dict[str, tuple[type, str]] = {
    "redis_url": (str, "Redis URL; unset runs the embedded single-node broker"),
    "host": (str, "address to listen on (default 0.0.0.0)"),
    "port": (int, "port to listen on (default 8080)"),
    "workers": (str, "node processes sharing the port: a number or auto, one per CPU (default 1)"),
    "heartbeat_interval": (float, "seconds of silence before a heartbeat comment (default 15)"),
    "retry_ms": (int, "reconnect delay hint sent to clients as retry: (default 3000)"),
    "channel_prefix": (str, "prefix of the Redis pub/sub channels (default sse:)"),
    "node_id": (str, "this node's name (default <hostname>:<port>)"),
    "max_channels_per_connection": (int, "channels one connection may follow (default 16)"),
    "max_message_bytes": (int, "largest accepted publish body (default 1048576)"),
    "max_pending_bytes": (int, "unsent bytes before a slow client is cut off (default 1048576)"),
    "max_replay_bytes": (int, "bytes of history one request may replay (default 4194304)"),
    "history_maxlen": (int, "messages kept per channel for resume (default 1000)"),
    "history_ttl": (int, "seconds before an idle channel's history expires, 0 never (86400)"),
    "idempotency_window": (float, "seconds a publish's idempotency key is remembered (300)"),
    "publish_replicas": (int, "replicas that must hold a publish before it is acknowledged (0)"),
    "publish_replica_timeout": (float, "seconds to wait for those replicas (default 1)"),
    "max_connections": (int, "open streams per node before 503 (default 10000)"),
    "max_connections_per_ip": (int, "open streams per client address before 429 (0: off)"),
    "trusted_proxies": (str, "comma-separated proxy addresses/CIDRs whose X-Forwarded-For counts"),
    "overload_response": (str, "error (503/429, default) or retry (200, jittered retry:, close)"),
    "jwt_public_key": (str, "PEM public key (or @path) for RS256/ES256 tokens"),
    "cors_origins": (str, "comma-separated origins allowed to subscribe and publish"),
    "demo": (str, "auto (on without Redis), on, or off: the demo answers on this node"),
    "demo_token_delay": (float, "seconds between demo tokens (default 0.05)"),
    "demo_prefix": (str, "the demo answers only on channels starting with this (default demo:)"),
    "demo_queue_max": (int, "demo questions waiting or being answered at once (default 100)"),
    "demo_job_ttl": (float, "seconds a queued demo question stays worth answering (default 60)"),
    "demo_asks_per_minute": (int, "demo questions per client address per minute (default 10)"),
    "max_connection_age": (float, "seconds (jittered) before a stream ends to rebalance; 0 off"),
    "token_expiry": (str, "end (default): a stream ends when its JWT expires; keep: it stays"),
    "header_timeout": (float, "seconds a connection may take to send its headers (default 10)"),
    "body_timeout": (float, "seconds a request may take to send its body (default 10)"),
    "shutdown_timeout": (float, "seconds a stop may take (default 10)"),
    "log_level": (str, "DEBUG, INFO, WARNING or ERROR (default INFO)"),
    "log_format": (str, "plain (default) or json, one object per line"),
    "access_log": (str, "on (all but /events, default), all, or off"),
}


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and flags; an invalid value exits with one line."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a rule across settings says which ones itself
            sys.exit(f"broadcaster: {reason}")
        field = str(first["loc"][0])
        flag = f" (--{field.replace('_', '-')})" if field in SERVE_FLAGS else ""
        sys.exit(f"broadcaster: invalid {setting_name(field)}{flag}: {reason}")


def warn_unknown_variables() -> None:
    """Log a warning for each BROADCASTER_ variable that sets nothing (a likely typo)."""
    for warning in unknown_variables(os.environ):
        log.warning(warning)
