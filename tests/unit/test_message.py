"""The pub/sub payloads a node reads: raw text, or the envelope `sse_publish` sends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.core.message import ENVELOPE_MARK, LIVE_MARK, Message, plain, unpack


def envelope(id_: str, prev: str, event: str, ms: str, data: str) -> bytes:
    """What redis_library.lua publishes."""
    return ENVELOPE_MARK + "\n".join(["", id_, prev, event, ms, data]).encode()


def test_raw_text_is_the_event_data() -> None:
    assert plain(b'{"looks": "like json"}') == Message('{"looks": "like json"}')


def test_raw_text_that_looks_like_an_envelope_is_still_just_data() -> None:
    forged = envelope("99999999999999-999999", "", "reset", "0", "FORGED")
    assert plain(forged) == Message(forged.decode())


def test_non_utf8_raw_payload_is_replaced_not_fatal() -> None:
    assert plain(b"ok \xff\xfe") == Message("ok \ufffd\ufffd")


def test_envelope_carries_id_prev_event_and_time() -> None:
    assert unpack(envelope("5-2", "4-1", "update", "5", "a\nb")) == Message(
        "a\nb", "update", "5-2", "4-1", 5
    )
    assert unpack(envelope("5-2", "", "", "5", "")) == Message("", None, "5-2", None, 5)


def test_a_live_only_envelope_has_no_id() -> None:
    # What presence.lua publishes for `join` and `leave`: delivered, never sequenced.
    live = LIVE_MARK + b'\n\n\njoin\n7\n{"sub":"ana","info":null}'
    assert unpack(live) == Message('{"sub":"ana","info":null}', "join", published_ms=7)


@pytest.mark.parametrize(
    "payload",
    [
        LIVE_MARK + b"\n5-2\n\njoin\n7\nan id it may not carry",
        LIVE_MARK + b"\n\n4-1\njoin\n7\na prev it may not carry",
        ENVELOPE_MARK + b"\n1-1\n\n",
        envelope("1-1", "", "", "soon", "x"),
        ENVELOPE_MARK + b"x",
        envelope("", "", "", "5", "no id"),
        b"plain text on the durable channel",
    ],
)
def test_a_bad_envelope_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        unpack(payload)


@given(
    data=st.text(),
    event=st.text(st.characters(exclude_characters="\r\n\0", exclude_categories=["Cs"])),
    ms=st.integers(min_value=0, max_value=10**14),
)
def test_any_data_survives_the_envelope(data: str, event: str, ms: int) -> None:
    message = unpack(envelope("9-3", "8-1", event, str(ms), data))
    assert message == Message(data, event or None, "9-3", "8-1", ms)
