"""One Last-Event-ID across groups: its form, round trips, and the ids it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.core.ids import EventId
from broadcaster.core.positions import PositionError, Positions, check_of

ids = st.builds(EventId, st.integers(0, 10**15 - 1), st.integers(0, 10**18 - 1))
groups = st.text(alphabet="abc{}:-_~.", min_size=1, max_size=8)


def test_one_group_keeps_the_plain_id() -> None:
    positions = Positions.start({"news": EventId(1796445362374, 3)})
    assert str(positions) == "1796445362374-3"
    assert Positions.parse("1796445362374-3", ["news"]) == positions


def test_several_groups_are_one_id_in_the_order_of_their_names() -> None:
    positions = Positions.start({"room7": EventId(5, 1), "news": EventId(9, 2)})
    assert str(positions) == f"9-2_5-1~{check_of(['news', 'room7'])}"
    moved = positions.moved("room7", EventId(6, 4))
    assert (moved.of("news"), moved.of("room7")) == (EventId(9, 2), EventId(6, 4))


@given(st.dictionaries(groups, ids, min_size=1, max_size=20))
def test_every_id_reads_back_as_it_was_written(at: dict[str, EventId]) -> None:
    positions = Positions.start(at)
    assert Positions.parse(str(positions), at) == positions


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("9-2_5-1", "malformed"),  # no check
        ("9-2_x~00000000", "malformed"),
        ("", "malformed"),
        ("9-2", "malformed"),  # a plain id for two groups
        ("9-2_5-1~00000000", "unknown"),  # a check of other groups
        (f"9-2_5-1_3-3~{check_of(['news', 'room7'])}", "unknown"),  # one position too many
    ],
)
def test_ids_that_give_no_position_say_why(text: str, reason: str) -> None:
    with pytest.raises(PositionError) as refused:
        Positions.parse(text, ["room7", "news"])
    assert refused.value.reason == reason


def test_an_id_for_other_groups_of_the_same_count_is_unknown() -> None:
    other = str(Positions.start({"a": EventId(1, 1), "b": EventId(2, 2)}))
    with pytest.raises(PositionError, match="another set of channels"):
        Positions.parse(other, ["a", "c"])
