"""`broadcaster presence <channel>...`: a node's `GET /presence` answer printed as one line
of JSON; a refusal as one line and exit status 1; a misuse as argparse's exit status 2."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

import aiohttp

from broadcaster.cluster.processes import free_port, settings_env
from tests.support.client import subscribe
from tests.support.nodes import StartNode
from tests.support.processes import run_broadcaster
from tests.support.tokens import SECRET, token


async def presence_cli(*args: str, **settings: str) -> tuple[int, str, str]:
    """`broadcaster presence ARGS` with only these BROADCASTER_ settings, run to its end:
    its exit status, and what it printed to stdout and to stderr."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "broadcaster", "presence", *args),
        env=settings_env(settings, inherit=False),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_it_prints_the_endpoints_answer(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    node = start_node()
    async with contextlib.AsyncExitStack() as stack:
        for channels in (["a"], ["a", "b"]):
            await stack.enter_async_context(subscribe(session, node.url, channels))
        params = [("channel", "a"), ("channel", "b"), ("channel", "c")]
        async with session.get(f"{node.url}/presence", params=params) as answer:
            assert answer.status == 200
            expected = await answer.json()
        code, out, err = await presence_cli("a", "b", "c", "--url", node.url)
    assert (code, err) == (0, "")
    assert out.endswith("\n") and out.count("\n") == 1
    assert json.loads(out) == expected == {"channels": {"a": 2, "b": 1, "c": 0}, "scope": "node"}


async def test_refusals_exit_1_with_the_nodes_one_line_reason(start_node: StartNode) -> None:
    node = start_node(jwt_secret=SECRET)
    rooms = token(subscribe=["room:*"])
    # The token from BROADCASTER_TOKEN, or --token.
    code, out, err = await presence_cli("room:1", "--url", node.url, token=rooms)
    assert (code, json.loads(out), err) == (0, {"channels": {"room:1": 0}, "scope": "node"}, "")
    assert await presence_cli("room:1", "other", "--url", node.url, "--token", rooms) == (
        1,
        "",
        "broadcaster: presence refused: 403: token does not allow presence on channel 'other'\n",
    )
    code, out, err = await presence_cli("room:1", "--url", node.url)
    assert (code, out) == (1, "")
    assert err.startswith("broadcaster: presence refused: 401: missing token")
    code, out, err = await presence_cli("bad channel", "--url", node.url, token=rooms)
    assert (code, out, err.count("\n")) == (1, "", 1)
    assert err.startswith("broadcaster: presence refused: 400: channel 'bad channel' may contain")


async def test_an_unreachable_node_exits_1_with_one_line() -> None:
    code, out, err = await presence_cli("a", "--url", f"http://127.0.0.1:{free_port()}")
    assert (code, out, err.count("\n")) == (1, "", 1)
    assert err.startswith("broadcaster: cannot read presence: ")


def test_misuses_exit_2_before_any_request() -> None:
    # Refused before anything is sent: there is no node to reach.
    for args, reason in (
        (["a", "b", "--clients"], "--clients lists the subscribers of one channel"),
        (["a", "--limit", "5"], "--limit and --after page the list of --clients"),
        (["a", "--clients", "--limit", "many"], "argument --limit: invalid int value"),
        ([], "the following arguments are required: channel"),
    ):
        done = run_broadcaster("presence", *args)
        assert (done.returncode, done.stdout) == (2, ""), args
        assert f"broadcaster presence: error: {reason}" in done.stderr


async def test_clients_prints_a_page_of_the_endpoints_answer(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    node = start_node(jwt_secret=SECRET)
    counting = token(presence=["room"])
    async with contextlib.AsyncExitStack() as stack:
        for sub in ("ana", "ana", "bob"):
            headers = {"Authorization": f"Bearer {token(subscribe=['room'], sub=sub)}"}
            await stack.enter_async_context(subscribe(session, node.url, ["room"], headers))
        query = {"channel": "room", "clients": "1", "limit": "1"}
        headers = {"Authorization": f"Bearer {counting}"}
        async with session.get(f"{node.url}/presence", params=query, headers=headers) as answer:
            assert answer.status == 200
            expected = await answer.json()
        args = ("room", "--clients", "--limit", "1", "--url", node.url)
        code, out, err = await presence_cli(*args, token=counting)
        assert (code, err) == (0, "")
        assert json.loads(out) == expected
        assert [c["sub"] for c in expected["clients"]] == ["ana"]
        code, out, err = await presence_cli(*args, "--after", expected["next"], token=counting)
        assert (code, err) == (0, "")
        assert [c["sub"] for c in json.loads(out)["clients"]] == ["bob"]
