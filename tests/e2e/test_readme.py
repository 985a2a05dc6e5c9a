"""The README's "Try it" and "A cluster on Redis" sections, run as written.

Every shell command in them runs with bash from a directory outside the checkout whose
`.venv` is a fresh venv holding the installed wheel, on the README's own ports, and what
it prints is checked against what the README shows. So the docs and the product cannot
drift apart unnoticed.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broadcaster.cluster.processes import settings_env, spawn, stop, stop_group
from tests.support.sse import Event, Parser

pytestmark = pytest.mark.slow

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
PORTS = {8080: "a node", 8081: "a second node"}  # what the README's commands listen on
REDIS_PORT = 6379
ID = r"\d+-\d+"
README_ID = re.search(r'"id":"(\d+-\d+)"', README)[1]  # type: ignore[index]
LONG_RUNNING = re.compile(r"broadcaster serve|broadcaster demo|curl -N")


def section(heading: str) -> str:
    """The README's text from `heading` to the next heading."""
    start = README.index(f"\n{heading}\n") + len(heading) + 2
    return README[start : re.compile(r"\n#{2,3} [A-Z]").search(README, start).start()]  # type: ignore[union-attr]


def shell_commands(text: str) -> list[str]:
    """The commands of every ```sh block in `text`, in order (continuation lines joined,
    comments dropped)."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip() and not command.lstrip().startswith("#"):
                commands.append(command.strip())
    return commands


def inline_commands(text: str) -> list[str]:
    """Commands quoted inline in the prose: `curl -N '...'`."""
    return re.findall(r"`(curl -N '[^`]+')`", text)


class Background:
    """A command that runs until stopped, its standard output collected in a file."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str], output: Path) -> None:
        self.output = output
        with output.open("wb") as sink, output.with_suffix(".err").open("wb") as errors:
            self.process = subprocess.Popen(
                ["bash", "-c", command],
                cwd=cwd,
                env=env,
                stdout=sink,
                stderr=errors,  # (curl's progress meter, when not on a terminal)
                start_new_session=True,  # stopped with what it started (stop_group)
            )

    def __call__(self) -> str:
        """What it printed so far."""
        return self.output.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, as Ctrl-C would; SIGKILL if it lingers."""
        stop_group(self.process)


class Shell:
    """Runs commands with bash in `cwd`, as a user at a terminal would."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.env = settings_env(inherit=False)
        self.background: list[Background] = []

    def run(self, command: str) -> str:
        """Run `command` to its end; its standard output."""
        assert not LONG_RUNNING.search(command), command
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        return done.stdout

    def start(self, command: str) -> Background:
        """Start a command that runs until stopped (a node, `curl -N`)."""
        assert LONG_RUNNING.search(command), command
        output = self.cwd / f"out-{len(self.background)}.txt"
        self.background.append(Background(command, self.cwd, self.env, output))
        return self.background[-1]

    def stop_all(self) -> None:
        """Stop every command still running, the last started first."""
        for command in reversed(self.background):
            command.stop()


def wait(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def ready(port: int) -> bool:
    try:
        done = subprocess.run(
            ["curl", "-sf", "-o", "/dev/null", f"http://localhost:{port}/readyz"],
            timeout=5,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def events(output: str) -> list[Event]:
    return Parser().feed(output)


@pytest.fixture
def shell(installed: Path, tmp_path: Path) -> Iterator[Shell]:
    """A directory outside the checkout whose `.venv` holds the installed wheel."""
    for port, what in PORTS.items():
        assert not port_in_use(port), f"port {port} is taken; the README starts {what} there"
    (tmp_path / ".venv").symlink_to(installed)
    user = Shell(tmp_path)
    yield user
    user.stop_all()


@pytest.fixture
def redis_on_6379(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The Redis the README assumes (`apt-get install redis-server` starts it on 6379)."""
    if port_in_use(REDIS_PORT):
        yield  # the machine's own: use it, as the README does
        return
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: apt-get install redis-server"
    data = tmp_path_factory.mktemp("redis")
    server = spawn(
        [binary, "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no", "--dir", str(data)]
    )
    try:
        wait(lambda: port_in_use(REDIS_PORT), "redis-server on 6379")
        yield
    finally:
        stop(server, signal.SIGKILL)


def test_try_it(shell: Shell) -> None:
    text = section("## Try it")
    serve, follow, publish = shell_commands(text)
    shown_answer = re.search(r"The publish answers `(\{.*?\})`", text)[1]  # type: ignore[index]
    shown_stream = re.search(r"the subscriber prints:\n\n```\n(.*?)```", text, re.S)[1]  # type: ignore[index]
    [resume] = inline_commands(text)

    shell.start(serve)
    wait(lambda: ready(8080), "the node")
    stream = shell.start(follow)
    wait(lambda: stream().startswith("retry: 3000\n\n"), "the subscription")
    answer = shell.run(publish)
    assert re.fullmatch(re.escape(shown_answer).replace(re.escape(README_ID), ID), answer)
    first = re.search(ID, answer)[0]  # type: ignore[index]
    expected = shown_stream.replace(README_ID, first)
    wait(lambda: stream() == expected, f"the subscriber to print {expected!r}")

    # "Stop the subscriber and resume from that id: you get every message published
    # since, then live ones."
    stream.stop()
    second = re.search(ID, shell.run(publish))[0]  # type: ignore[index]
    resumed = shell.start(resume.replace(README_ID, first))
    wait(lambda: len(events(resumed())) == 1, "the missed event")
    third = re.search(ID, shell.run(publish))[0]  # type: ignore[index]
    wait(lambda: len(events(resumed())) == 2, "the live event")
    assert events(resumed()) == [
        Event("hello", "greeting", second),
        Event("hello", "greeting", third),
    ]


@pytest.mark.usefixtures("redis_on_6379")
def test_a_cluster_on_redis(shell: Shell) -> None:
    text = section("## A cluster on Redis")
    commands = shell_commands(text)
    serves = [c for c in commands if "broadcaster serve" in c]
    demo = [c for c in commands if "broadcaster demo" in c]
    publishes = [c for c in commands if not LONG_RUNNING.search(c)]
    assert len(serves) == 2 and len(demo) == 1 and len(publishes) == 5, commands
    follow, *_ = inline_commands(text)

    for serve in serves:
        shell.start(serve)
    wait(lambda: ready(8080) and ready(8081), "both nodes")
    stream = shell.start(follow)
    wait(lambda: stream().startswith("retry: 3000\n\n"), "the subscription")

    outputs = [shell.run(command).strip() for command in publishes]
    fcall, raw, http, cli, via_node = outputs
    assert re.fullmatch(ID, fcall), fcall  # "the function answers with the message id"
    assert raw == "1"  # one node follows the channel
    assert re.fullmatch(r'\{"channel":"news","id":"' + ID + r'"\}', http), http
    assert re.fullmatch(ID, cli) and re.fullmatch(ID, via_node), (cli, via_node)
    http_id = re.search(ID, http)[0]  # type: ignore[index]
    wait(lambda: len(events(stream())) == 5, "the five publishes")
    assert events(stream()) == [
        Event("hello from redis-cli", "greeting", fcall),
        Event("hello from a raw publish", "message", fcall),  # no id: the last one stays
        Event("hello over http", "message", http_id),
        Event("hello from the cli", "note", cli),
        Event("via a node", "message", via_node),
    ]
    # "PUBSUB NUMSUB sse:news in redis-cli shows one subscription per node"
    assert shell.run("redis-cli PUBSUB NUMSUB sse:news").split() == ["sse:news", "1"]
    # "How many clients follow a channel": the CLI answers what the README shows.
    presence = re.search(r"`(\.venv/bin/broadcaster presence [^`]+)`", text)
    shown = re.search(r'answers\s+`(\{"channels"[^`]+)`', text)
    assert presence and shown, "the README's presence example"
    wait(lambda: shell.run(presence[1]).strip() == shown[1], "the presence count")

    # The chat page asks on a node (with the nodes' publish token, as /?token= does);
    # the producer the README starts answers through Redis.
    shell.start(demo[0])
    page = shell.start("curl -N 'localhost:8081/events?channel=demo:readme&lastEventId=earliest'")
    wait(lambda: page().startswith("retry: 3000\n\n"), "the page's subscription")
    asked = shell.run(
        "curl -s -X POST localhost:8080/demo/ask -H 'Authorization: Bearer s3cret' "
        """-d '{"channel": "demo:readme", "prompt": "hi"}'"""
    )
    assert json.loads(asked) == {"channel": "demo:readme", "producer": "queue"}
    wait(lambda: any(e.event == "done" for e in events(page())), "the demo's answer")
