"""A user's first mistakes with the `broadcaster` command each get one clear line."""

from __future__ import annotations

import os
import socket
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from tests.support.processes import Node, run_broadcaster
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_version_names_the_installed_release() -> None:
    done = run_broadcaster("--version")
    release = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (done.returncode, done.stdout, done.stderr) == (0, f"broadcaster {release}\n", "")


def test_a_taken_port_is_one_line_naming_its_holder() -> None:
    with socket.socket() as taken:  # held by this test's own process
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_broadcaster("serve", "--host", "127.0.0.1", "--port", str(port))
    assert done.returncode == 1
    line = done.stderr.splitlines()[-1]
    start = f"broadcaster: cannot listen on 127.0.0.1:{port}: address already in use, by pid "
    start += f"{os.getpid()} ("
    end = "); stop it or choose another --port"
    assert line.startswith(start)
    assert line.endswith(end)
    # The holder's command line (this test's own), cut to 80 characters if longer.
    shown = line.removeprefix(start).removesuffix(end)
    words = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    real = " ".join(word.decode() for word in words)
    assert shown == real or (len(shown) == 80 and real.startswith(shown.removesuffix("...")))
    assert shown.startswith(sys.executable[:77])
    assert "Traceback" not in done.stderr


def test_a_misspelt_setting_is_named_with_the_closest_one(
    start_node: Callable[..., Node],
) -> None:
    node = start_node(max_conections="5", retry_ms="1000")
    assert node.ready()
    log = node.log.read_text()
    assert (
        "BROADCASTER_MAX_CONECTIONS is not a setting (did you mean "
        "BROADCASTER_MAX_CONNECTIONS?); it is ignored" in log
    )
    assert "BROADCASTER_RETRY_MS" not in log


async def test_an_unknown_setting_does_not_stop_a_node(start_node: Callable[..., Node]) -> None:
    node = start_node(token="for-the-subscribe-command", fancy="1")
    await wait_until(node.ready, 5, "the node")
    log = node.log.read_text()
    assert "BROADCASTER_FANCY is not a setting; it is ignored" in log
    assert "BROADCASTER_TOKEN" not in log  # `broadcaster subscribe` reads it
