"""`broadcaster publish <channel> - --lines`: standard input as a stream of events, each
line published as it arrives, then `done`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

import aiohttp
import pytest

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
