"""Channel patterns (`*` for any run of characters) match in linear time."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.node.auth import matches, reaches

ALPHABET = "ab.*"


def reference(pattern: str, channel: str) -> bool:
    """The meaning, by a regex (fine for the short inputs hypothesis makes)."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, channel, re.S) is not None


@given(st.text(ALPHABET, max_size=8), st.text(ALPHABET.replace("*", ""), max_size=12))
def test_matches_means_what_the_glob_says(pattern: str, channel: str) -> None:
    assert matches(pattern, channel) == reference(pattern, channel)


def test_a_pathological_pattern_costs_one_search_per_star() -> None:
    # The backtracking regex tried every way to place the stars: seconds of a blocked loop
    # for a 200-character channel. Here each part is searched once, left to right.
    searches = 0

    class Counting(str):
        def find(self, *args: object) -> int:
            nonlocal searches
            searches += 1
            return super().find(*args)  # type: ignore[arg-type]

    # (`.*\..*\..*\..*\..*\.public` took 13 s on this one.)
    channel = Counting("." * 200)
    assert not matches("*.*.*.*.*.public", channel)
    assert searches == 0  # the suffix alone says no
    channel = Counting("." * 194 + "public")
    assert matches("*.*.*.*.*.public", channel)
    assert searches == 4
    searches = 0
    assert not matches("*x*.*.*.*.public", channel)
    assert searches == 1


@pytest.mark.parametrize(
    ("pattern", "prefix", "reached"),
    [
        ("demo:*", "demo:", True),
        ("*", "demo:", True),
        ("de*", "demo:", True),
        ("demo:chat.*", "demo:", True),
        ("demo:a", "demo:", True),
        ("private.*", "demo:", False),
        ("demo", "demo:", False),
        ("*.public", "demo:", True),
        ("dx*", "demo:", False),
    ],
)
def test_a_pattern_reaches_a_prefix_when_some_channel_under_it_matches(
    pattern: str, prefix: str, reached: bool
) -> None:
    assert reaches(pattern, prefix) is reached
