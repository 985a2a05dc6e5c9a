"""The format nodes exchange over the broker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.message import ENVELOPE_MARK, Message, pack, unpack


def test_raw_text_is_the_event_data() -> None:
    assert unpack(b'{"looks": "like json"}') == Message('{"looks": "like json"}')


def test_non_utf8_raw_payload_is_replaced_not_fatal() -> None:
    assert unpack(b"ok \xff\xfe") == Message("ok \ufffd\ufffd")


def test_envelope_carries_event_and_id() -> None:
    message = Message("a\nb", "update", "17")
    assert unpack(pack(message)) == message


@pytest.mark.parametrize(
    "payload",
    [
        ENVELOPE_MARK + b"not json",
        ENVELOPE_MARK + b"[1, 2]",
        ENVELOPE_MARK + b'{"d": 5}',
        ENVELOPE_MARK + b'{"d": "x", "e": "bad\\nevent"}',
    ],
)
def test_a_bad_envelope_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        unpack(payload)


@given(
    data=st.text(),
    event=st.none() | st.text(st.characters(exclude_characters="\r\n\0"), min_size=1),
    id=st.none() | st.text(st.characters(exclude_characters="\r\n\0")),
)
def test_any_message_survives_the_broker(data: str, event: str | None, id: str | None) -> None:
    message = Message(data, event, id)
    assert unpack(pack(message)) == message
