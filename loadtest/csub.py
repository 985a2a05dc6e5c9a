"""The C subscriber core (csub.c): built at run time, driven by a worker over a pipe.

A Python subscriber costs a few µs per received chunk (one core reads 100k-300k
events/s), below what one node delivers; csub.c does the same bookkeeping in an epoll
loop. It is compiled with the system's `cc` into ~/.cache/broadcaster-loadtest/ under a
hash of the source, the flags and the compiler version, so nothing compiled is
committed and an edit rebuilds it.

`CWorker` answers the orchestrator's commands exactly as `worker.Worker` does (same
names, same reply dicts), passing them on to the C process; see csub.c for the lines
they travel as.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from .worker import Spec  # worker.py imports this module at run time

SOURCE = Path(__file__).with_name("csub.c")
CFLAGS = ("-O2", "-Wall", "-Wextra")
STATS = ("events", "unparsed", "gaps", "duplicates", "errors", "dropped", "held")


def compiler() -> str | None:
    """The C compiler: $CC, else `cc`, if it is installed."""
    return shutil.which(os.environ.get("CC", "cc"))


def default_client() -> str:
    """The default --client: c when a compiler is found, else python (said on stderr)."""
    if compiler():
        return "c"
    print("loadtest: no C compiler (cc) found, using the Python subscribers", file=sys.stderr)
    return "python"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "broadcaster-loadtest"


def build(cache: Path | None = None, flags: tuple[str, ...] = CFLAGS) -> Path:
    """The compiled client, built now unless the cache already has this very build."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC or install cc), or use --client python")
    source = SOURCE.read_bytes()
    version = subprocess.run([cc, "--version"], capture_output=True, check=False).stdout
    key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), version])).hexdigest()
    binary = (cache or cache_dir()) / f"csub-{key[:16]}"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")  # racing builds: last wins
    # From stdin, so that what is compiled is exactly what was hashed.
    done = subprocess.run(
        [cc, *flags, "-x", "c", "-o", str(partial), "-"],
        input=source,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"compiling {SOURCE} failed:\n{done.stderr.decode()}")
    if done.stderr:
        print(done.stderr.decode(), file=sys.stderr)
    partial.replace(binary)
    return binary


class Core:
    """One csub process and its subscribers; every method waits for the reply."""

    def __init__(self, binary: Path | str) -> None:
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._in = cast(IO[bytes], self.proc.stdin)
        self._out = cast(IO[bytes], self.proc.stdout)

    def _send(self, text: str) -> None:
        self._in.write(text.encode())
        self._in.flush()

    def _reply(self) -> list[str]:
        line = self._out.readline()
        if not line:
            raise RuntimeError(f"csub exited (status {self.proc.wait()})")
        return line.decode().split()

    def add(self, host: str, port: int, specs: list[Spec]) -> None:
        """Declare subscribers (not connected yet)."""
        ip = socket.gethostbyname(host)
        lines = []
        for source, path, channels in specs:
            if any(c.split() != [c] for c in [path, *channels]):
                raise ValueError(f"csub needs paths and channels without spaces: {path}")
            lines.append(f"sub {source} {ip} {port} {host} {path} {' '.join(channels)}\n")
        self._send("".join(lines))

    def connect(self, concurrency: int, timeout: float) -> dict[str, Any]:
        self._send(f"connect {concurrency} {timeout}\n")
        held, failed, seconds = self._reply()
        return {"held": int(held), "failed": int(failed), "seconds": float(seconds)}

    def disconnect(self) -> int:
        self._send("disconnect\n")
        return int(self._reply()[0])

    def stats(self, expected: dict[str, int] | None = None) -> dict[str, Any]:
        """Counts since the last call, as `WorkerStats.drain`; `behind_*` with `expected`."""
        self._send(f"stats{_pairs(expected or {})}\n")
        fields = [int(f) for f in self._reply()]
        snap: dict[str, Any] = dict(zip(STATS, fields, strict=False))
        size = fields[-1] * 8
        snap["latencies"] = self._out.read(size) if size else b""
        if len(snap["latencies"]) != size:
            raise RuntimeError("csub exited while sending latencies")
        if expected is not None:
            snap["behind_subs"], snap["behind_events"] = fields[7], fields[8]
        return snap

    def wait(self, expected: dict[str, int], timeout: float) -> dict[str, Any]:
        self._send(f"wait {timeout}{_pairs(expected)}\n")
        caught_up, at, subs, events = self._reply()
        return {
            "caught_up": caught_up == "1",
            "at": float(at),
            "behind_subs": int(subs),
            "behind_events": int(events),
        }

    def close(self) -> None:
        """End of stdin stops the process; its connections close as it exits."""
        if not self._in.closed:
            self._in.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


def _pairs(expected: dict[str, int]) -> str:
    return "".join(f" {channel} {count}" for channel, count in expected.items())


class CWorker:
    """`worker.Worker`'s commands, carried out by a csub process."""

    def __init__(self, conn: Connection, binary: str) -> None:
        self.conn = conn
        self.core = Core(binary)

    def serve(self) -> None:
        try:
            while True:
                command, args = self.conn.recv()
                if command == "stop":
                    self.core.close()
                    self.conn.send(None)
                    return
                self.conn.send(getattr(self, "cmd_" + command)(**args))
        finally:
            self.core.close()

    def cmd_open(
        self, host: str, port: int, specs: list[Spec], concurrency: int, timeout: float
    ) -> dict[str, Any]:
        self.core.add(host, port, specs)
        return self.core.connect(concurrency, timeout)

    def cmd_reconnect(self, concurrency: int, timeout: float) -> dict[str, Any]:
        return self.core.connect(concurrency, timeout)

    def cmd_disconnect(self) -> int:
        return self.core.disconnect()

    def cmd_stats(self, expected: dict[str, int] | None = None) -> dict[str, Any]:
        return self.core.stats(expected)

    def cmd_wait(self, expected: dict[str, int], timeout: float) -> dict[str, Any]:
        return self.core.wait(expected, timeout)
