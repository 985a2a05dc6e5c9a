"""Fuzzing the HTTP surface: any input gets a clear answer, never a 500 or a crash."""

from __future__ import annotations

from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.nodes import Client, StartClient

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
async def client(start_client: StartClient) -> Client:
    return await start_client(publish_token="t", max_message_bytes=4096, heartbeat_interval=60)


def one_line(text: str) -> bool:
    return text.endswith("\n") and text.count("\n") == 1


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
bodies = st.one_of(
    st.binary(max_size=6000),
    st.dictionaries(st.sampled_from(["channel", "data", "event", "x"]), json_values).map(
        orjson.dumps
    ),
)


@FUZZ
@given(body=bodies)
async def test_publish_answers_every_body_clearly(client: Client, body: bytes) -> None:
    answer = await client.post("/publish", data=body, headers={"Authorization": "Bearer t"})
    assert answer.status in (200, 400, 413), answer.status
    if answer.status != 200:
        assert one_line(await answer.text())


@FUZZ
@given(
    # Lone surrogates cannot be put in a URL at all (they have no UTF-8 form).
    channels=st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=30), max_size=20),
    last_id=st.none()
    | st.text(st.characters(exclude_characters="\r\n\0", exclude_categories=["Cs"]), max_size=40),
)
async def test_subscribe_answers_every_query_clearly(
    client: Client, channels: list[str], last_id: str | None
) -> None:
    query = "&".join(f"channel={quote(c, safe='')}" for c in channels)
    if last_id is not None:
        query += f"&lastEventId={quote(last_id, safe='')}"
    async with client.get(f"/events?{query}") as answer:
        assert answer.status in (200, 400), answer.status
        if answer.status == 400:
            assert one_line(await answer.text())
        else:
            first = await answer.content.readuntil(b"\n\n")
            assert first.startswith(b"retry: ")
