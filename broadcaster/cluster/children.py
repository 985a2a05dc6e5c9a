"""The child processes of `broadcaster cluster`: each started in a session of its own
with its output in a log, waited on while it must stay up, and a failure told in one
line that names the log (or whoever holds the port it wanted)."""

from __future__ import annotations

import ssl
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from broadcaster.cluster.processes import (
    Ended,
    StartError,
    spawn,
    wait_for_http,
    wait_for_port,
    which,
)
from broadcaster.node.ports import holder, holders

INSTALL = {
    "redis-server": "sudo apt-get install redis-server",
    "redis-cli": "sudo apt-get install redis-tools",
    "nginx": "sudo apt-get install nginx",
    "prometheus": "sudo apt-get install prometheus",
}
START_TIMEOUT = 30  # seconds each part may take to answer
PORT_TIMEOUT = 15  # seconds Redis and the Sentinels may take to listen


class ClusterError(Exception):
    """The cluster cannot start; the message says what to do."""


@dataclass(kw_only=True)
class Children:
    """Named child processes, their logs in `workdir`."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="broadcaster-")))
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def log_path(self, name: str) -> Path:
        """Where the process `name` writes its output."""
        return self.workdir / f"{name}.log"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        # Its own session: Ctrl-C goes to `broadcaster cluster`, which stops all in order.
        log = self.log_path(name)
        self.processes[name] = spawn(argv, log=log, env=env, cwd=self.workdir, own_session=True)

    def _wait_http(
        self,
        name: str,
        url: str,
        context: ssl.SSLContext | None = None,
        port: int | None = None,
    ) -> None:
        """Wait until `url` answers 200 while the process `name` stays up. With `port`, the
        answer must come from `name` itself: a process left over from another run may hold
        the port (and answer) while ours fails to bind it."""
        process = self.processes[name]
        try:
            wait_for_http(url, process, START_TIMEOUT, context)
        except Ended:
            if port is not None and holders(port):
                raise self._port_taken(name, port) from None
            raise self._ended(name) from None
        except StartError:
            raise ClusterError(
                f"{url} did not answer within {START_TIMEOUT}s; see {self.log_path(name)}"
            ) from None
        if port is not None and process.pid not in holders(port):
            raise self._port_taken(name, port)

    def _wait_port(self, name: str, port: int) -> None:
        try:
            wait_for_port(port, PORT_TIMEOUT, self.processes[name])
        except Ended:
            raise self._ended(name) from None
        except StartError:
            raise ClusterError(f"nothing listens on port {port}") from None

    def _ended(self, name: str) -> ClusterError:
        log = self.log_path(name)
        return ClusterError(
            f"{name} (pid {self.processes[name].pid}) exited while starting: {_last_line(log)}; "
            f"see {log}"
        )

    def _port_taken(self, name: str, port: int) -> ClusterError:
        return ClusterError(
            f"{name} (pid {self.processes[name].pid}) cannot listen on 127.0.0.1:{port}: it is "
            f"held {holder(port) or 'by another process'}; stop that or choose another --port; "
            f"see {self.log_path(name)}"
        )


def installed(binary: str) -> str:
    """Where `binary` is; raises ClusterError with the line that installs it."""
    found = which(binary)
    if found is None:
        raise ClusterError(f"{binary} is not installed: {INSTALL[binary]}")
    return found


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "it wrote nothing"
