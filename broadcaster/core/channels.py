"""Channel names: the one safe charset and length every entry point enforces."""

from __future__ import annotations

import re

MAX_CHANNEL_LENGTH = 200
CHANNEL_CHARSET = "letters, digits and - _ . : @ / ="
_CHANNEL = re.compile(r"[A-Za-z0-9\-_.:@/=]+")
_SHOWN = 40  # characters of a bad name quoted in its error


def check_channel(name: str) -> str:
    """Return `name` if it is a valid channel name, else raise ValueError with the reason,
    which quotes the name (its start, if long)."""
    if not name:
        raise ValueError("channel name is empty")
    if len(name) > MAX_CHANNEL_LENGTH:
        raise ValueError(f"channel {_shown(name)} is longer than {MAX_CHANNEL_LENGTH} characters")
    if not _CHANNEL.fullmatch(name):
        raise ValueError(f"channel {_shown(name)} may contain only {CHANNEL_CHARSET}")
    return name


def _shown(name: str) -> str:
    return repr(name if len(name) <= _SHOWN else name[:_SHOWN] + "...")
