"""Channel-name rules, and the hash tag that names a channel's group."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.core.channels import MAX_CHANNEL_LENGTH, check_channel, group_of


@pytest.mark.parametrize(
    "name",
    ["news", "a-b_c.d:e", "user@42/feed=x", "x" * MAX_CHANNEL_LENGTH, "{room7}chat", "a{b}", "{t}"],
)
def test_safe_names_pass(name: str) -> None:
    assert check_channel(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * (MAX_CHANNEL_LENGTH + 1), "longer than"),
        ("a b", "may contain only"),
        ("a*", "may contain only"),
        ("new\nline", "may contain only"),
        ("café", "may contain only"),
        ("{{room}x}", "nested braces are refused"),
        ("{room}{x}", "may hold one {tag}"),
        ("{}chat", "non-empty"),
        ("{room", "may hold one {tag}"),
        ("room}", "may hold one {tag}"),
        ("{a b}", "may hold one {tag}"),
    ],
)
def test_unsafe_names_fail_with_a_reason(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_channel(name)


@pytest.mark.parametrize(
    ("channel", "group"),
    [("{room7}chat", "room7"), ("chat{room7}", "room7"), ("a{b}c", "b"), ("news", "news")],
)
def test_a_channels_group_is_its_tag_or_itself(channel: str, group: str) -> None:
    assert group_of(channel) == group


def redis_hash_tag(key: str) -> str:
    """What Redis Cluster hashes of `key` (its keyHashSlot): the text between the first
    `{` and the next `}` if not empty, else the whole key."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


@given(st.text(alphabet="ab{}:", min_size=1, max_size=12))
def test_the_group_is_what_redis_hashes_in_a_key_named_by_it(name: str) -> None:
    # A group's keys are `<prefix>{<group>}:...<channel>`: Redis must hash the group, and
    # every valid channel of a tag hashes to the same tag on its own.
    try:
        check_channel(name)
    except ValueError:
        return
    group = group_of(name)
    assert redis_hash_tag(f"sse:{{{group}}}:history:{name}") == group
    if "{" in name:
        assert redis_hash_tag(name) == group
