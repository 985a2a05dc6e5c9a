"""The kernel's floor: what one small write to each of N loopback connections costs here.

`python -m loadtest.floor [--connections 10000] [--rounds 20] [--bytes 120]`

A writer pinned to the first core (the node's core in the benchmarks) sends one chunk
of `--bytes` to every connection in a tight loop, `--rounds` times; a reader process on
the other cores drains them with epoll, as the subscribers do. No HTTP, no event loop, no
bookkeeping: each round is the least any server on one core spends to deliver one
message to N subscribers with one write each. It prints the time per write and per
round as JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import select
import socket
import statistics
import time
from multiprocessing.connection import Connection


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.floor", description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--bytes", type=int, default=120)
    args = parser.parse_args()
    print(json.dumps(measure(args.connections, args.rounds, args.bytes), indent=2))


def measure(connections: int, rounds: int, size: int) -> dict[str, object]:
    """Time `rounds` rounds of one `size`-byte send to each of `connections` sockets."""
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cores[:1])
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    ours, theirs = mp.Pipe()
    reader = mp.get_context("fork").Process(
        target=_read, args=(port, connections, theirs, cores[1:] or cores), daemon=True
    )
    reader.start()
    accepted = [listener.accept()[0] for _ in range(connections)]
    ours.recv()  # the reader has connected all
    chunk = b"x" * (size - 1) + b"\n"
    seconds = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            for sock in accepted:
                sock.send(chunk)
            seconds.append(time.perf_counter() - started)
            ours.send(len(accepted) * size)  # wait for the reader to drain the round
            ours.recv()
    finally:
        ours.send(0)
        reader.join(10)
        for sock in accepted:
            sock.close()
        listener.close()
    per_round = statistics.median(seconds)
    return {
        "connections": connections,
        "rounds": rounds,
        "bytes_per_write": size,
        "round_ms_median": round(per_round * 1000, 1),
        "round_ms_min": round(min(seconds) * 1000, 1),
        "write_us_median": round(per_round / connections * 1e6, 2),
        "writes_per_second": round(connections / per_round),
    }


def _read(port: int, connections: int, control: Connection, cores: list[int]) -> None:
    os.sched_setaffinity(0, cores)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    poller = select.epoll()
    by_fd = {}
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    control.send(True)
    while expected := control.recv():
        got = 0
        while got < expected:
            for fd, _ in poller.poll(1):
                got += len(by_fd[fd].recv(65536))
        control.send(True)
    for sock in socks:
        sock.close()


if __name__ == "__main__":
    main()
