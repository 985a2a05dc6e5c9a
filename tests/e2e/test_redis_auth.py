"""A Redis with a password (requirepass, as the compose file runs it): nodes and the CLI
take it from BROADCASTER_REDIS_URL, and never log it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.client import subscribe
from tests.support.processes import Node, RedisServer

PASSWORD = "9f3c1a7e5b2d4c6a8e0f"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, password=PASSWORD)
    server.start()
    anonymous = subprocess.run(
        ["redis-cli", "-p", str(server.port), "PING"], check=False, capture_output=True, text=True
    )
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr, "the password is required"
    yield server
    server.kill()


async def test_nodes_and_the_cli_use_the_password_from_the_url(
    locked_redis: RedisServer, start_node: Callable[..., Node]
) -> None:
    node = start_node(locked_redis.url)  # ready: it reached Redis with the password
    async with aiohttp.ClientSession() as session, subscribe(session, node.url, ["locked"]) as sub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROADCASTER_")}
        cli = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "broadcaster", "publish", "locked", "through the password"),
            env={**env, "BROADCASTER_REDIS_URL": locked_redis.url},
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await cli.communicate()
        assert cli.returncode == 0
        [event] = await sub.wait_for(1)
        assert (event.data, event.id) == ("through the password", out.decode().strip())
    assert PASSWORD not in node.log.read_text()
    assert f"redis://***@127.0.0.1:{locked_redis.port}" in node.log.read_text()
