"""Channel names: the one safe charset and length every entry point enforces, and the
hash tag that decides a channel's group (its sequence) on a Redis Cluster."""

from __future__ import annotations

import re

MAX_CHANNEL_LENGTH = 200
CHANNEL_CHARSET = "letters, digits and - _ . : @ / =, and at most one {tag}"
_PLAIN = r"[A-Za-z0-9\-_.:@/=]"
# The same characters, with at most one `{tag}` of them (not empty) anywhere in the name.
_CHANNEL = re.compile(rf"{_PLAIN}*(?:\{{({_PLAIN}+)\}}{_PLAIN}*)?")
_SHOWN = 40  # characters of a bad name quoted in its error


def check_channel(name: str) -> str:
    """Return `name` if it is a valid channel name, else raise ValueError with the reason,
    which quotes the name (its start, if long)."""
    if not name:
        raise ValueError("channel name is empty")
    if len(name) > MAX_CHANNEL_LENGTH:
        raise ValueError(f"channel {_shown(name)} is longer than {MAX_CHANNEL_LENGTH} characters")
    if not _CHANNEL.fullmatch(name):
        if "{" in name or "}" in name:
            raise ValueError(
                f"channel {_shown(name)} may hold one {{tag}}: a non-empty name between one "
                "'{' and the next '}', with no other brace (nested braces are refused)"
            )
        raise ValueError(f"channel {_shown(name)} may contain only {CHANNEL_CHARSET}")
    return name


def group_of(channel: str) -> str:
    """The group of a valid channel: its `{tag}` (`{room7}chat` is in `room7`), or the
    channel itself when it has none. Channels of one group share a sequence, so one id is
    a position in all of them; on a Redis Cluster a group's keys lie in one slot (the tag
    is Redis's hash tag)."""
    found = _CHANNEL.fullmatch(channel)
    tag = found.group(1) if found is not None else None
    return tag if tag is not None else channel


def _shown(name: str) -> str:
    return repr(name if len(name) <= _SHOWN else name[:_SHOWN] + "...")
