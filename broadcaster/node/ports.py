"""Listening on a port, and naming who holds one, so that a taken port is one clear line.

The holder is found in Linux's /proc (the listening socket's inode, then the process with
that socket open); elsewhere, or for another user's process, it stays unnamed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

_LISTEN = "0A"  # the TCP state of a listening socket in /proc/net/tcp
_SHOWN = 80  # characters of a command line shown


class ListenError(Exception):
    """A process cannot listen where it was told to; the message says why in one line."""


def cannot_listen(host: str, port: int, exc: OSError) -> ListenError:
    """The error for failing to listen on `host:port` with `exc`, naming the port's holder."""
    reason = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
    if exc.errno == errno.EADDRINUSE:
        reason += f", {holder(port) or 'by another process'}; stop it or choose another --port"
    return ListenError(f"cannot listen on {host}:{port}: {reason}")


def holder(port: int) -> str | None:
    """`by pid N (its command line)` for the process listening on TCP `port`, if known."""
    pids = holders(port)
    if not pids:
        return None
    try:
        return f"by pid {pids[0]} ({_command_line(Path(f'/proc/{pids[0]}'))})"
    except OSError:  # gone meanwhile
        return f"by pid {pids[0]}"


def holders(port: int) -> list[int]:
    """The processes with a socket listening on TCP `port` open, as far as /proc shows."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not sockets:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in sockets for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return sorted(pids)


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _LISTEN and int(local.rpartition(":")[2], 16) == port:
                inodes.add(inode)
    return inodes


def _command_line(process: Path) -> str:
    words = (process / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    text = " ".join(" ".join(word.decode(errors="replace").split()) for word in words)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
