"""`broadcaster subscribe`: the real command against real nodes, Redis and a local
cluster (its engine's unit tests: tests/unit/test_subscriber.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

import aiohttp
import pytest

from tests.support.cluster import fcall_publish, local_cluster
from tests.support.metrics import metric_sync
from tests.support.processes import Node, RedisServer
from tests.support.publish import TOKEN, publish
from tests.support.tokens import SECRET, token
from tests.support.wait import wait_until


class Command:
    """`python -m broadcaster subscribe ARGS` with its stdout and stderr lines collected."""

    def __init__(self, *args: str, **env: str) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("BROADCASTER_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "broadcaster", "subscribe", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**clean, **env},
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=_collect, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=_collect, args=(self.process.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def events(self) -> list[dict[str, Any]]:
        """The --json lines printed so far."""
        return [json.loads(line) for line in list(self.out)]

    def said(self, text: str) -> Callable[[], bool]:
        """A condition: some stderr line contains `text`."""
        return lambda: any(text in line for line in list(self.err))

    def wait(self, timeout: float = 15) -> int:
        """Wait for the command to exit and its output to be read; its exit status."""
        status = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        return status

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send `sig`; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait()

    def kill(self) -> None:
        """Make sure the process is gone."""
        if self.process.poll() is None:
            self.process.kill()
        self.wait()


def _collect(pipe: IO[str], lines: list[str]) -> None:
    for line in pipe:
        lines.append(line.removesuffix("\n"))


def counted(command: Command, count: int) -> Callable[[], bool]:
    return lambda: len(command.out) >= count


def redis_cli(redis_url: str, *args: str) -> str:
    port = redis_url.rsplit(":", 1)[1]
    return subprocess.run(
        ["redis-cli", "-p", port, *args], check=True, capture_output=True, text=True
    ).stdout


def open_streams(node_url: str) -> int:
    return int(metric_sync(node_url, "broadcaster_connections"))


@pytest.mark.slow
async def test_follows_through_the_balancer_across_a_killed_node() -> None:
    with local_cluster(2) as cluster:
        lb, redis_url = cluster["lb"][0], cluster["redis"][0]
        command = Command("room", "--url", lb, "--json")
        try:
            # Redis confirms the node's subscription: everything published from now on
            # reaches the stream.
            await wait_until(
                lambda: redis_cli(redis_url, "PUBSUB", "NUMSUB", "sse:room").split()[-1] == "1",
                15,
                "the node serving the subscriber to subscribe",
            )
            ids = [await fcall_publish(redis_url, "room", f"m{n}") for n in range(10)]
            await wait_until(counted(command, 10), 10, "ten events")
            serving = [name for name in ("node1", "node2") if open_streams(cluster[name][0])]
            assert len(serving) == 1, serving
            os.kill(cluster[serving[0]][1], signal.SIGKILL)
            ids += [await fcall_publish(redis_url, "room", f"m{n}") for n in range(10, 30)]
            await wait_until(counted(command, 30), 30, "thirty events")
            await wait_until(command.said(f"reconnected (resuming after {ids[9]})"), 10, "log")
            assert [e["id"] for e in command.events()] == ids  # none lost, none twice
            assert [e["data"] for e in command.events()] == [f"m{n}" for n in range(30)]
            assert {e["event"] for e in command.events()} == {"message"}
            assert any(line.startswith("broadcaster: connection lost") for line in command.err)
            assert command.stop() == 0
        finally:
            command.kill()


async def test_last_event_id_replays_what_followed_then_live(
    redis_server: RedisServer, start_node: Callable[..., Node]
) -> None:
    node = start_node(redis_server.url)
    ids = [await fcall_publish(redis_server.url, "news", f"old {n}") for n in range(3)]
    command = Command("news", "--url", node.url, "--last-event-id", ids[0])
    try:
        await wait_until(counted(command, 2), 10, "the two later events")
        ids.append(await fcall_publish(redis_server.url, "news", "live"))
        await wait_until(counted(command, 3), 10, "the live event")
        assert command.out == [
            f"[{ids[1]}] message: old 1",
            f"[{ids[2]}] message: old 2",
            f"[{ids[3]}] message: live",
        ]
        assert command.stop() == 0
        assert command.err == []
    finally:
        command.kill()


async def test_a_reset_is_printed_and_told_and_the_position_moves(
    redis_server: RedisServer, start_node: Callable[..., Node]
) -> None:
    node = start_node(redis_server.url, history_maxlen="2", retry_ms="100")
    ids = [await fcall_publish(redis_server.url, "news", f"m{n}") for n in range(5)]
    command = Command("news", "--url", node.url, "--last-event-id", ids[0], "--json")
    try:
        await wait_until(counted(command, 1), 10, "the reset")
        assert command.events()[0] == {
            "id": None,
            "event": "reset",
            "data": json.dumps({"channels": ["news"], "reason": "trimmed"}, separators=(",", ":")),
        }
        await wait_until(command.said("reset on news (trimmed)"), 10, "the reset line")
        assert command.err == [
            "broadcaster: reset on news (trimmed): history was lost; reload your state"
        ]
        # After the reset the node moved the position to its head with a bare `id:`: a
        # restart resumes from there, with what was published meanwhile and no second reset.
        node.stop()
        ids.append(await fcall_publish(redis_server.url, "news", "while down"))
        node.start()
        await wait_until(counted(command, 2), 20, "the event published while down")
        assert command.events()[1] == {"id": ids[5], "event": "message", "data": "while down"}
        await wait_until(command.said(f"reconnected (resuming after {ids[4]})"), 10, "log")
        assert sum("reset" in line for line in command.err) == 1
        assert command.stop() == 0
    finally:
        command.kill()


async def test_says_why_it_waits_while_the_node_cannot_reach_redis(
    redis_server: RedisServer, start_node: Callable[..., Node]
) -> None:
    node = start_node(redis_server.url)
    redis_server.kill()
    await wait_until(lambda: not node.ready(), 15, "the node to notice")
    command = Command("news", "--url", node.url)
    try:
        await wait_until(
            command.said(
                "cannot connect (503 broker unavailable: this node cannot reach Redis right "
                "now), retrying in"
            ),
            15,
            "the reason it waits",
        )
        redis_server.start()
        await wait_until(node.ready, 20, "the node to reconnect")
        await wait_until(command.said("broadcaster: connected"), 30, "the subscription")
        await wait_until(
            lambda: redis_cli(redis_server.url, "PUBSUB", "NUMSUB", "sse:news").split()[-1] == "1",
            10,
            "the node's subscription",
        )
        redis_cli(redis_server.url, "PUBLISH", "sse:news", "two\nlines")
        await wait_until(counted(command, 1), 10, "the event")
        assert command.out == ["[] message: two\\nlines"]  # one line per event
        assert command.stop() == 0
    finally:
        command.kill()


async def test_refused_without_a_token_and_received_with_one(
    redis_server: RedisServer, start_node: Callable[..., Node]
) -> None:
    node = start_node(redis_server.url, jwt_secret=SECRET)
    first = await fcall_publish(redis_server.url, "news", "before")
    later = await fcall_publish(redis_server.url, "news", "after")

    refused = Command("news", "--url", node.url)
    assert refused.wait() == 2
    assert refused.out == []
    assert len(refused.err) == 1 and refused.err[0].startswith("broadcaster: 401: "), refused.err

    other = token(subscribe=["other"])
    forbidden = Command("news", "--url", node.url, "--token", other)
    assert forbidden.wait() == 2
    assert len(forbidden.err) == 1 and forbidden.err[0].startswith("broadcaster: 403: ")

    allowed = token(subscribe=["news"])
    for args, env in (
        (("--token", allowed), {"BROADCASTER_TOKEN": other}),  # the flag wins
        ((), {"BROADCASTER_TOKEN": allowed}),
    ):
        command = Command("news", "--url", node.url, "--last-event-id", first, *args, **env)
        try:
            await wait_until(counted(command, 1), 10, "the event")
            assert command.out == [f"[{later}] message: after"]
            assert command.stop(signal.SIGINT) == 130
            assert not any("Traceback" in line for line in command.err), command.err
        finally:
            command.kill()


async def test_earliest_replays_everything_retained(
    redis_server: RedisServer, start_node: Callable[..., Node]
) -> None:
    node = start_node(redis_server.url)
    ids = [await fcall_publish(redis_server.url, "news", f"m{n}") for n in range(3)]
    command = Command("news", "--url", node.url, "--earliest", "--json")
    try:
        await wait_until(counted(command, 3), 10, "the three retained events")
        ids.append(await fcall_publish(redis_server.url, "news", "live"))
        await wait_until(counted(command, 4), 10, "the live event")
        assert [e["id"] for e in command.events()] == ids
        assert [e["data"] for e in command.events()] == ["m0", "m1", "m2", "live"]
        assert command.stop() == 0
    finally:
        command.kill()


async def test_exits_by_itself_once_the_channel_is_closed_and_everything_is_printed(
    start_node: Callable[..., Node],
) -> None:
    node = start_node(publish_token=TOKEN, retry_ms="100")
    commands: list[Command] = []
    try:
        async with aiohttp.ClientSession() as session:
            ids = [await publish(session, node.url, "answer", f"t{n}") for n in range(2)]
            following = Command("answer", "--url", node.url, "--earliest", "--json")
            commands.append(following)
            await wait_until(counted(following, 2), 10, "the two retained events")
            ids.append(await publish(session, node.url, "answer", "bye", close=True))
        # It gets the closing event live, its stream ends, and the node answers its
        # reconnect with 204: it exits 0 by itself.
        assert following.wait() == 0
        assert [e["id"] for e in following.events()] == ids
        assert following.err[-1] == "broadcaster: the channels are closed: nothing more will come"
        # Started once the channel is closed: what is retained, then the same end.
        late = Command("answer", "--url", node.url, "--earliest")
        commands.append(late)
        assert late.wait() == 0
        assert late.out == [
            f"[{ids[0]}] message: t0",
            f"[{ids[1]}] message: t1",
            f"[{ids[2]}] message: bye",
        ]
        # Asking for nothing of the past: nothing will come.
        nothing = Command("answer", "--url", node.url)
        commands.append(nothing)
        assert nothing.wait() == 0
        assert nothing.out == []
        assert nothing.err == ["broadcaster: the channels are closed: nothing more will come"]
    finally:
        for command in commands:
            command.kill()


# The engine, against scripted answers (httpx.MockTransport): what the protocol leaves to
# the client, byte by byte.
