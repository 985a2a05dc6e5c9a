"""Request bodies have deadlines: a body trickled in (slowloris) is cut with 408, and one
address may send only so many bodies at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from broadcaster.node.bodies import UPLOADS_PER_ADDRESS
from tests.support.processes import Node
from tests.support.tokens import SECRET, token
from tests.support.wait import wait_until

TOKEN = "s3cret"


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def trickle(node: Node, path: str, headers: str = "") -> Connection:
    """Start a POST whose body says 4,000 bytes and sends one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}"
        "Content-Length: 4000\r\n\r\n{".encode()
    )
    await writer.drain()
    return reader, writer  # (a writer dropped closes its connection)


async def answer(connection: Connection) -> tuple[bytes, bytes]:
    """The status line, and what follows until the node closes the connection."""
    reader, _ = connection
    status = await asyncio.wait_for(reader.readline(), 30)
    rest = await asyncio.wait_for(reader.read(), 30)  # EOF: the node closed it
    return status.strip(), rest


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/demo/ask", ""), ("/publish", f"Authorization: Bearer {TOKEN}\r\n")],
)
async def test_a_trickled_body_is_cut_with_408(
    start_node: Callable[..., Node], path: str, headers: str
) -> None:
    # (The demo is open to anyone without a publish token: its trickle is anonymous.)
    node = start_node(body_timeout="1", **({"publish_token": TOKEN} if headers else {}))
    status, rest = await answer(await trickle(node, path, headers))
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert b"the body took longer than 1 s (BROADCASTER_BODY_TIMEOUT)" in rest
    assert node.ready()


async def test_an_unauthorized_publisher_is_refused_before_it_sends_a_body(
    start_node: Callable[..., Node],
) -> None:
    node = start_node(body_timeout="30", publish_token=TOKEN)
    reader, _ = await trickle(node, "/publish")  # no token
    status = await asyncio.wait_for(reader.readline(), 30)
    assert status == b"HTTP/1.1 401 Unauthorized\r\n"


async def test_an_asker_whose_token_reaches_no_demo_channel_is_refused_before_its_body(
    start_node: Callable[..., Node],
) -> None:
    node = start_node(body_timeout="10", jwt_secret=SECRET, demo="on")
    elsewhere = token(publish=["private.*"])  # may publish, but on no `demo:` channel
    reader, _ = await trickle(node, "/demo/ask", f"Authorization: Bearer {elsewhere}\r\n")
    status = await asyncio.wait_for(reader.readline(), 30)  # (a 408 would come after 10 s)
    assert status == b"HTTP/1.1 403 Forbidden\r\n"


async def test_one_address_sends_only_so_many_bodies_at_once(
    start_node: Callable[..., Node],
) -> None:
    node = start_node(body_timeout="30", publish_token=TOKEN)
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    held = [await trickle(node, "/publish", auth) for _ in range(UPLOADS_PER_ADDRESS)]
    await wait_until(
        lambda: node.metric("broadcaster_uploads") == UPLOADS_PER_ADDRESS,
        10,
        "the node to be reading every body",
    )
    status, rest = await answer(await trickle(node, "/publish", auth))
    assert status == b"HTTP/1.1 429 Too Many Requests"
    assert b"too many requests sending bodies from this address at once" in rest
    assert len(held) == UPLOADS_PER_ADDRESS
