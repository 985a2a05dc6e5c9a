"""Child processes on loopback ports: the one home for starting, waiting on and stopping
them, used by `broadcaster cluster`, by the tests (tests/support) and by the load
generator (loadtest/).

A redis-server, a `broadcaster serve` node, nginx: each is `spawn`ed with its output in a
log, waited on (`wait_for_port`, `wait_for_redis`, `wait_for_http`) while it must stay
up, and stopped within a bound (`stop`, or `stop_group` for a process with a session of
its own and what it started). A process that does not come up raises `StartError`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT = 15.0  # seconds a process has to stop before it is killed
SERVE = (sys.executable, "-m", "broadcaster", "serve")  # a node, from this interpreter
_POLL = 0.05  # seconds between two looks at a starting process


class StartError(Exception):
    """A process did not come up in time; the message says what was waited for."""


class Ended(StartError):
    """The process ended while it was waited for."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def which(binary: str) -> str | None:
    """Where `binary` is: on the PATH, or in /usr/sbin (nginx, often not on a user's PATH)."""
    found = shutil.which(binary)
    if found is not None:
        return found
    sbin = Path("/usr/sbin") / binary
    return str(sbin) if sbin.exists() else None


def settings_env(
    settings: Mapping[str, str] | None = None, *, inherit: bool = True
) -> dict[str, str]:
    """This process's environment with `settings` as BROADCASTER_ variables (`port="1"`
    sets BROADCASTER_PORT). Without `inherit`, none of this process's own BROADCASTER_
    variables come along: only `settings` configure the child."""
    env = {k: v for k, v in os.environ.items() if inherit or not k.startswith("BROADCASTER_")}
    env.update({f"BROADCASTER_{name.upper()}": value for name, value in (settings or {}).items()})
    return env


def node_env(
    port: int, redis_url: str | None = None, *, inherit: bool = True, **settings: str
) -> dict[str, str]:
    """The environment of a node serving 127.0.0.1:`port`, on `redis_url` (the embedded
    broker without one), with `settings` (see `settings_env`)."""
    fixed = {"port": str(port), **({"redis_url": redis_url} if redis_url is not None else {})}
    return settings_env({"host": LOOPBACK, **settings, **fixed}, inherit=inherit)


def redis_argv(
    port: int,
    workdir: Path | None = None,
    *extra: str,
    durable: bool = False,
    binary: str | None = None,
) -> list[str]:
    """The command line of a redis-server on 127.0.0.1:`port`, its files in `workdir`: with
    `durable` an append-only file, as deployed; otherwise nothing is written to disk.
    `extra` options come last (`--replicaof HOST PORT`, `--requirepass P`)."""
    return [
        binary or which("redis-server") or "redis-server",
        *("--port", str(port), "--bind", LOOPBACK),
        *("--save", "", "--appendonly", "yes" if durable else "no"),
        *(("--dir", str(workdir)) if workdir is not None else ()),
        *extra,
    ]


def spawn(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    own_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `argv` with its output (standard output and error) appended to `log`; without
    a log, its standard output is dropped and its errors go where ours do. With
    `own_session` it leads a session of its own: a Ctrl-C at our terminal reaches only us
    (who then stop it in order), and `stop_group` stops it with whatever it started."""
    if log is None:
        return subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, start_new_session=own_session
        )
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=own_session,
        )


def wait_for_port(
    port: int, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port` (while `process`, if
    given, runs)."""

    def accepts() -> bool:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return True
        except OSError:
            return False

    _wait(accepts, f"nothing listens on port {port}", timeout, process)


def wait_for_redis(
    port: int, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until the redis-server on 127.0.0.1:`port` answers PING (a server still loading
    its data accepts connections but answers -LOADING)."""

    def pongs() -> bool:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    _wait(pongs, f"redis-server on port {port} does not answer PING", timeout, process)


def answers(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether a GET of `url` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_for_http(
    url: str,
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = 30.0,
    context: ssl.SSLContext | None = None,
) -> None:
    """Wait until `url` answers 200 (a node's /readyz) while `process`, if given, runs."""
    _wait(lambda: answers(url, context), f"{url} did not answer 200", timeout, process)


def _wait(
    condition: Callable[[], bool],
    failure: str,
    timeout: float,
    process: subprocess.Popen[bytes] | None,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise Ended(f"pid {process.pid} exited (status {process.returncode}): {failure}")
        if condition():
            return
        if time.monotonic() > deadline:
            raise StartError(f"{failure} within {timeout:g}s")
        time.sleep(_POLL)


def reap(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """Wait for `process` to end, SIGKILL it if it outlives `timeout`; its exit status."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def stop(
    process: subprocess.Popen[bytes] | None,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = STOP_TIMEOUT,
) -> None:
    """Send `sig` to `process` if it still runs, then reap it (see `reap`)."""
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(sig)
    reap(process, timeout)


def stop_group(
    process: subprocess.Popen[bytes],
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = STOP_TIMEOUT,
) -> None:
    """Stop a process spawned with `own_session` and all of its process group: `sig` to
    the group, as a Ctrl-C would, then SIGKILL to whatever of the group is left once the
    leader ended or outlived `timeout` (an nginx worker its killed master left behind, a
    command a shell started)."""
    if process.poll() is None:
        _signal_group(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def rss_kb(pid: int | None) -> int | None:
    """A process's resident memory in kB, from /proc (None without a pid, or when it is
    gone or unknown)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
