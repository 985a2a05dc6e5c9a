"""Channel-name rules."""

from __future__ import annotations

import pytest

from broadcaster.core.channels import MAX_CHANNEL_LENGTH, check_channel


@pytest.mark.parametrize("name", ["news", "a-b_c.d:e", "user@42/feed=x", "x" * MAX_CHANNEL_LENGTH])
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
    ],
)
def test_unsafe_names_fail_with_a_reason(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_channel(name)
