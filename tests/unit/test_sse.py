"""The event-stream encoder against a spec-following parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.core.sse import HEARTBEAT, encode_comment, encode_event, encode_retry
from tests.support.sse import Event, Parser, parse


def roundtrip(data: str, event: str | None = None, id: str | None = None) -> list[Event]:
    return parse(encode_event(data, event, id).decode())


def normalised(data: str) -> str:
    return data.replace("\r\n", "\n").replace("\r", "\n")


def test_each_line_ending_starts_a_data_line() -> None:
    assert encode_event("a\r\nb\rc\nd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x0c", "\x85", "\x0b", "\x1c"])
def test_only_cr_and_lf_split_lines(separator: str) -> None:
    assert roundtrip(f"a{separator}b") == [Event(f"a{separator}b")]


def test_empty_data_still_yields_an_event() -> None:
    assert encode_event("") == b"data: \n\n"
    assert roundtrip("") == [Event("")]


def test_trailing_and_blank_lines_are_kept() -> None:
    assert roundtrip("a\n\nb\n") == [Event("a\n\nb\n")]


def test_leading_spaces_and_colons_survive() -> None:
    assert roundtrip("  x\n: not a comment\n:") == [Event("  x\n: not a comment\n:")]


def test_event_type_and_id_are_sent() -> None:
    assert encode_event("x", "update", "42") == b"id: 42\nevent: update\ndata: x\n\n"
    assert roundtrip("x", "update", "42") == [Event("x", "update", "42")]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_event_and_id_never_carry_cr_lf_or_nul(bad: str) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        encode_event("x", event=bad)
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        encode_event("x", id=bad)


def test_injected_fields_stay_data() -> None:
    assert roundtrip("x\n\nevent: admin\ndata: y") == [Event("x\n\nevent: admin\ndata: y")]


def test_retry_comment_and_heartbeat_dispatch_nothing() -> None:
    parser = Parser()
    assert parser.feed((encode_retry(2500) + HEARTBEAT + encode_comment("hi")).decode()) == []
    assert parser.retry == 2500
    assert parser.comments == 2


def test_lone_surrogates_do_not_break_encoding() -> None:
    assert roundtrip("a\ud800b") == [Event("a?b")]


field_text = st.text(
    st.characters(exclude_characters="\r\n\0", exclude_categories=["Cs"]), min_size=1
)


@given(
    data=st.text(st.characters(exclude_categories=["Cs"])),
    event=st.none() | field_text,
    id=st.none() | field_text,
)
def test_parser_reads_back_what_was_published(data: str, event: str | None, id: str | None) -> None:
    assert roundtrip(data, event, id) == [Event(normalised(data), event or "message", id or "")]


@given(
    messages=st.lists(st.text(st.characters(exclude_categories=["Cs"])), max_size=5),
    cut=st.integers(min_value=0),
)
def test_a_stream_cut_anywhere_parses_the_same(messages: list[str], cut: int) -> None:
    stream = b"".join(encode_event(m) for m in messages).decode()
    at = cut % (len(stream) + 1)
    parser = Parser()
    assert parser.feed(stream[:at]) + parser.feed(stream[at:]) == [
        Event(normalised(m)) for m in messages
    ]
