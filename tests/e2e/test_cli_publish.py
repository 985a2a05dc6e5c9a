"""`broadcaster publish <channel> - --lines`: standard input as a stream of events, each
line published as it arrives, then `done`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable

import aiohttp
import pytest

from broadcaster.brokers.protocol import CLOSED_REASON
from tests.support.client import subscribe
from tests.support.processes import Node, RedisServer

LINES = ["compiling…", "", "linking\r", "done, 0 errors"]


async def pipe_lines(args: list[str], env: dict[str, str], node: Node) -> None:
    """Each line arrives while the next has not been written yet: with --coalesce too, the
    window's timer sends it, as an event of its own with its line break."""
    coalesced = "--coalesce" in args
    async with aiohttp.ClientSession() as session, subscribe(session, node.url, ["build"]) as sub:
        cli = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "broadcaster", "publish", "build", "-", "--lines", *args),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert cli.stdin is not None
        for n, line in enumerate(LINES, 1):
            cli.stdin.write(f"{line}\n".encode())
            await cli.stdin.drain()
            sent = line.removesuffix("\r") + ("\n" if coalesced else "")
            assert [e.data for e in await sub.wait_for(n)][-1] == sent
        cli.stdin.close()
        out, _ = await cli.communicate()
        events = await sub.wait_for(5)
        assert cli.returncode == 0
        done = '{"chunks":4,"events":4}' if coalesced else '{"chunks":4}'
        assert [(e.event, e.data) for e in events] == [
            *(("line", line.removesuffix("\r") + ("\n" if coalesced else "")) for line in LINES),
            ("done", done),
        ]
        assert out.decode().strip() == events[-1].id


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROADCASTER_")}
    return {**env, **{f"BROADCASTER_{k.upper()}": v for k, v in settings.items()}}


async def test_lines_through_redis(
    redis_server: RedisServer, start_node: Callable[..., Node]
) -> None:
    node = start_node(redis_server.url)
    await pipe_lines([], clean_env(redis_url=redis_server.url), node)


async def test_lines_through_a_node(start_node: Callable[..., Node]) -> None:
    node = start_node(publish_token="s3cret")
    await pipe_lines(["--url", node.url], clean_env(publish_token="s3cret"), node)


async def test_coalesced_lines_are_timed_and_merged(start_node: Callable[..., Node]) -> None:
    node = start_node(publish_token="s3cret")
    env = clean_env(publish_token="s3cret")
    await pipe_lines(["--url", node.url, "--coalesce", "0.05"], env, node)
    async with aiohttp.ClientSession() as session, subscribe(session, node.url, ["logs"]) as sub:
        cli = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "broadcaster", "publish", "logs", "-", "--lines"),
            *("--coalesce", "60", "--url", node.url),
            env=env,
            stdin=asyncio.subprocess.PIPE,
        )
        # All at once, within one window: one event, the lines joined as they came.
        await cli.communicate(b"a\r\n\nb\nno break at the end")
        assert cli.returncode == 0
        assert [(e.event, e.data) for e in await sub.wait_for(2)] == [
            ("line", "a\n\nb\nno break at the end"),
            ("done", '{"chunks":4,"events":1}'),
        ]


async def cli(args: list[str], env: dict[str, str], stdin: bytes = b"") -> tuple[int, str, str]:
    """`broadcaster publish ARGS` with `stdin`, run to its end: its exit status, and what
    it printed to stdout and to stderr (stripped)."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "broadcaster", "publish", *args),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 30)
    assert process.returncode is not None
    return process.returncode, out.decode().strip(), err.decode().strip()


@pytest.fixture(params=["redis", "node"])
def through(
    request: pytest.FixtureRequest, start_node: Callable[..., Node]
) -> tuple[Node, dict[str, str], list[str]]:
    """A node, and how `broadcaster publish` reaches it: its environment and options
    (straight to the node's Redis, or through the node with --url)."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return start_node(server.url), clean_env(redis_url=server.url), []
    node = start_node(publish_token="s3cret")
    return node, clean_env(publish_token="s3cret"), ["--url", node.url]


async def test_lines_close_the_channel_and_reopen_opens_it(
    through: tuple[Node, dict[str, str], list[str]],
) -> None:
    node, env, options = through
    async with aiohttp.ClientSession() as session, subscribe(session, node.url, ["build"]) as sub:
        code, out, err = await cli(["build", "-", "--lines", *options], env, b"a\nb\n")
        assert (code, err) == (0, "")
        await asyncio.wait_for(sub.ended.wait(), 10)  # the node ends it after `done`
        assert [(e.event, e.data) for e in sub.events] == [
            ("line", "a"),
            ("line", "b"),
            ("done", '{"chunks":2}'),
        ]
        assert out == sub.events[-1].id
    refused = (1, "", f"broadcaster: publish refused: {CLOSED_REASON}")
    assert await cli(["build", "late", *options], env) == refused
    assert await cli(["build", "-", "--lines", *options], env, b"late lines\n") == refused
    code, again, err = await cli(["build", "again", "--reopen", *options], env)
    assert (code, err) == (0, "") and again
    code, later, err = await cli(["build", "open", *options], env)
    assert (code, err) == (0, "") and later != again


async def test_keep_open_leaves_the_channel_open_and_close_closes_it(
    start_node: Callable[..., Node],
) -> None:
    node = start_node(publish_token="s3cret")
    env, options = clean_env(publish_token="s3cret"), ["--url", node.url]
    async with aiohttp.ClientSession() as session:
        async with subscribe(session, node.url, ["log"]) as sub:
            code, _, err = await cli(["log", "-", "--lines", "--keep-open", *options], env, b"a\n")
            assert (code, err) == (0, "")
            code, last, err = await cli(["log", "bye", "--close", *options], env)
            assert (code, err) == (0, "")
            await asyncio.wait_for(sub.ended.wait(), 10)
            assert [e.data for e in sub.events] == ["a", '{"chunks":1}', "bye"]
        # Lines that reopen it close it again at their end.
        reopen = ["log", "-", "--lines", "--reopen", *options]
        code, done, err = await cli(reopen, env, b"b\n")
        assert (code, err) == (0, "")
        async with subscribe(session, node.url, ["log"], {"Last-Event-ID": last}) as sub:
            await asyncio.wait_for(sub.ended.wait(), 10)
            assert [e.data for e in sub.events] == ["b", '{"chunks":1}']
            assert sub.events[-1].id == done


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["build", "text", "--lines"], "--lines reads standard input: give - as the data"),
        (
            ["build", "x", "--coalesce", "1"],
            "--coalesce merges the lines of --lines: give --lines too",
        ),
        (
            ["build", "-", "--lines", "--coalesce", "-1"],
            "--coalesce takes a non-negative finite number of seconds, not '-1'",
        ),
        (
            ["build", "-", "--lines", "--coalesce", "nan"],
            "--coalesce takes a non-negative finite number of seconds, not 'nan'",
        ),
        (
            ["bad channel", "x"],
            "publish refused: channel 'bad channel' may contain only letters, digits and "
            "- _ . : @ / =, and at most one {tag}",
        ),
    ],
)
async def test_refusals_exit_with_one_line(
    args: list[str], message: str, start_node: Callable[..., Node]
) -> None:
    node = start_node(publish_token="t")
    cli = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "broadcaster", "publish", *args, "--url", node.url),
        env=clean_env(publish_token="t"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await cli.communicate()
    assert cli.returncode == 1
    assert err.decode().strip() == f"broadcaster: {message}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--keep-open"], "--keep-open is for --lines (a single message closes with --close)"),
        (
            ["-", "--lines", "--close"],
            "--lines closes the channel at the end already (or --keep-open)",
        ),
    ],
)
def test_closing_options_in_the_wrong_place_exit_with_one_line(
    args: list[str], message: str
) -> None:
    # Refused before anything is read or sent: there is no node to reach.
    done = subprocess.run(
        [sys.executable, "-m", "broadcaster", "publish", "build", *args],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"broadcaster: {message}\n")
