"""Settings from the environment and `serve` flags, shared by the commands."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from broadcaster.node.settings import setting_name, unknown_variables
from broadcaster.settings import Settings

log = logging.getLogger("broadcaster.node.settings")

# `serve` flags, each overriding the BROADCASTER_ variable of the same name, with the type
# argparse reads it as. Everything else about a setting (its default, what it does) is
# written once, in its `Settings` field; the secrets have no flag.
_FLAG_TYPES: dict[str, type] = {
    "redis_url": str,
    "host": str,
    "port": int,
    "workers": str,  # a number, or auto
    "heartbeat_interval": float,
    "retry_ms": int,
    "channel_prefix": str,
    "node_id": str,
    "max_channels_per_connection": int,
    "max_message_bytes": int,
    "max_pending_bytes": int,
    "max_replay_bytes": int,
    "history_maxlen": int,
    "history_ttl": int,
    "idempotency_window": float,
    "publish_replicas": int,
    "publish_replica_timeout": float,
    "max_connections": int,
    "max_connections_per_ip": int,
    "trusted_proxies": str,
    "overload_response": str,
    "jwt_public_key": str,
    "cors_origins": str,
    "demo": str,
    "demo_token_delay": float,
    "demo_prefix": str,
    "demo_queue_max": int,
    "demo_job_ttl": float,
    "demo_asks_per_minute": int,
    "max_connection_age": float,
    "token_expiry": str,
    "presence_events": str,
    "header_timeout": float,
    "body_timeout": float,
    "shutdown_timeout": float,
    "log_level": str,
    "log_format": str,
    "access_log": str,
}

# Defaults shown otherwise than as the field's value: worked out at start, or 0 meaning off.
_WORKED_OUT_DEFAULTS = {"node_id": "<hostname>:<port>"}
_ZERO_IS_OFF = frozenset({"max_connections_per_ip", "max_connection_age"})


def shown_default(field: str, code: Callable[[str], str] = str) -> str:
    """`field`'s default as a user would write it (`code` marks it up), or "unset" (None)
    or "empty" (an empty list)."""
    if field in _WORKED_OUT_DEFAULTS:
        return code(_WORKED_OUT_DEFAULTS[field])
    default = Settings.model_fields[field].default
    if default is None:
        return "unset"
    if default == ():
        return "empty"
    if isinstance(default, float) and default.is_integer():
        default = int(default)  # as the environment would give it: 15, not 15.0
    text = code(str(default))
    return f"{text} (off)" if default == 0 and field in _ZERO_IS_OFF else text


def plain(markdown: str) -> str:
    """A description's Markdown as terminal text: a link to a page of docs/ becomes its text
    and the page's path, and code loses its backticks."""
    text = re.sub(r"\[([^\]]*)\]\(([^)#]*)[^)]*\)", r"\1 (docs/\2)", markdown)
    return text.replace("`", "")


def flag_help(field: str) -> str:
    """`--help`'s text for a `serve` flag: the setting's description and default (escaped for
    argparse, which formats help with %)."""
    description = Settings.model_fields[field].description or ""
    return f"{plain(description)} (default: {shown_default(field)})".replace("%", "%%")


SERVE_FLAGS: dict[str, tuple[type, str]] = {
    field: (kind, flag_help(field)) for field, kind in _FLAG_TYPES.items()
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
    for warning in unknown_variables(os.environ, Settings):
        log.warning(warning)
