"""Durable publishes: how fast each way of publishing goes, and what each message costs
Redis.

`python -m loadtest publish [--seconds 3] [--channels 1000] [--only a,b] [--out FILE]`

Starts one redis-server (no persistence) pinned with `taskset` to the last core, and runs
this process, and for the HTTP cases one `broadcaster serve` node, on the other(s). Each
case starts from an empty Redis (FLUSHALL; the function library stays), publishes for
`--warmup` seconds, then `CONFIG RESETSTAT`, `--seconds` measured, `INFO commandstats`:
messages/s; Redis's µs per FCALL and per message (all FCALL µs / messages); Redis's CPU
per message from /proc (commands, and reading and writing sockets); and how many times
an `XADD` of the same entry (the `xadd` cases, first and last) each message costs. The
stream cases run `RedisPublisher.stream` on a 500 tokens/s source instead, and read the
answers back from pub/sub. Every case says what it published and what the histories hold
afterwards (read from Redis). 127.0.0.1 only; everything stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from broadcaster.brokers.redis.library import Library
from broadcaster.cluster.processes import free_port

from ..node import Managed, node_command, node_env, start_node, start_redis
from .answers import STREAMS
from .cases import CASES, Bench, Case, kept, xadd
from .meter import history_entries

ALL = [*CASES, *STREAMS, Case("xadd-end", "the yardstick again, at the end", xadd)]

TARGETS = {
    "fcall-100": "Redis ≤ 6 µs per message (single FCALLs)",
    "fcall-key-100": "Redis ≤ 8 µs per message (single, idempotency key)",
    "async-many-100": "≥ 100k msg/s; Redis ≤ 4 µs per message (batches of 100)",
    "sync-many-100": "≥ 100k msg/s; Redis ≤ 4 µs per message (batches of 100)",
    "http-many-100": "≥ 50k msg/s",
    "stream-coalesce": "≤ 21 events/s per answer, the same text",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    parser.add_argument("--channels", type=int, default=1000, help="channels published round")
    parser.add_argument("--size", type=int, default=100, help="bytes of each message's data")
    parser.add_argument("--only", help="comma-separated cases: " + ",".join(c.name for c in ALL))
    parser.add_argument("--stream-seconds", type=float, default=2.0, help="length of an answer")
    parser.add_argument("--answers", type=int, default=1, help="answers streamed at once")
    parser.add_argument("--no-pin", action="store_true", help="do not pin Redis and the rest")
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/publish.json"))


def selected(only: str | None) -> list[Case]:
    if not only:
        return ALL
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(names) - {case.name for case in ALL})
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; there are {[c.name for c in ALL]}")
    return [case for case in ALL if case.name in names]


def check(args: argparse.Namespace) -> None:
    """The bounds: a run of this tool stops within minutes."""
    if not (0 < args.seconds <= 60 and 0 <= args.warmup <= 10 and 0 < args.stream_seconds <= 30):
        raise SystemExit("--seconds: up to 60, --warmup: up to 10, --stream-seconds: up to 30")
    if not (1 <= args.channels <= 100_000 and 1 <= args.answers <= 100 and args.size >= 1):
        raise SystemExit("--channels: 1 to 100,000; --answers: 1 to 100; --size: from 1")


def main(args: argparse.Namespace) -> int:
    check(args)
    cases = selected(args.only)
    cores = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cores) > 1 and shutil.which("taskset") is not None
    redis_core, generator = (cores[-1], cores[:-1]) if pin else (None, cores)
    if pin:
        os.sched_setaffinity(0, generator)
    log_dir = Path(tempfile.mkdtemp(prefix="loadtest-publish-"))
    started = time.time()
    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        server, url = start_redis(log_dir, redis_core)
        stack.callback(server.stop)
        control = redis.Redis.from_url(url)
        stack.callback(control.close)
        Library().load_sync(control, replace=True)
        bench = Bench(
            url,
            server.pid,
            control,
            [f"bench.{n}" for n in range(args.channels)],
            "x" * args.size,
            args.warmup,
            args.seconds,
            args.stream_seconds,
            args.answers,
        )
        node: Managed | None = None
        try:
            for case in cases:
                if case.node and node is None:
                    node = _start_node(bench, log_dir, generator[0] if pin else None)
                elif not case.node and node is not None:
                    node.stop()
                    node, bench.node_url, bench.node_pid = None, None, None
                results.append(_run(case, bench))
                print(_line(results[-1]), file=sys.stderr)
        finally:
            if node is not None:
                node.stop()
    _compare_with_xadd(results)
    report = {
        "benchmark": "publish",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "layout": f"redis-server on core {redis_core}, generator and node on {generator}"
        if pin
        else "not pinned",
        "redis": _redis_version(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "logs": str(log_dir),
        "seconds": round(time.time() - started, 1),
        "targets": TARGETS,
        "cases": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(table(results))
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if any("error" in r for r in results) else 0


def _start_node(bench: Bench, log_dir: Path, core: int | None) -> Managed:
    port = free_port()
    env = node_env(bench.token, bench.redis_url)
    node = Managed("node", node_command(port, core), env, log_dir / "node.log")
    start_node(node, f"http://127.0.0.1:{port}")
    bench.node_url, bench.node_pid = f"http://127.0.0.1:{port}", node.pid
    return node


def _run(case: Case, bench: Bench) -> dict[str, Any]:
    """One case from an empty Redis; an error is recorded, and the next case runs."""
    bench.control.flushall()
    head = {"case": case.name, "what": case.what}
    try:
        figures = case.run(bench)
    except Exception as exc:
        return {**head, "error": f"{type(exc).__name__}: {exc}"}
    figures.setdefault("expected_in_history", kept(figures["published"], len(bench.channels)))
    return {**head, **figures, "history_entries": history_entries(bench.control)}


def _compare_with_xadd(results: list[dict[str, Any]]) -> None:
    """Each case's Redis µs per message in XADDs: the yardstick's mean µs per XADD."""
    marks = [r["usec_per_call"] for r in results if r.get("command") == "xadd"]
    marks = [mark for mark in marks if mark]
    if not marks:
        return
    xadd = sum(marks) / len(marks)
    for r in results:
        if r.get("redis_usec_per_message") is not None:
            r["xadds_per_message"] = round(r["redis_usec_per_message"] / xadd, 2)


def _redis_version() -> str:
    found = subprocess.run(
        ["redis-server", "--version"], check=False, capture_output=True, text=True
    )
    return found.stdout.strip()


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['case']}: ERROR {r['error']}"
    return (
        f"{r['case']}: {r['messages_per_second']} msg/s, {r['redis_usec_per_message']} µs "
        f"Redis per message ({r['usec_per_call']} µs per {r['command']})"
    )


HEADER = (
    "case",
    "msg/s",
    "Redis µs per call",
    "Redis µs per msg",
    "in XADDs",
    "Redis CPU µs per msg",
    "generator CPU µs per msg",
    "CPU % Redis / generator / node / others",
    "in histories",
)


def table(results: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table."""
    rows = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['case']} | error: {r['error']} |")
            continue
        cpu = r["cpu_percent"]
        cells = [
            r["case"],
            f"{r['messages_per_second']:,}",
            r["usec_per_call"],
            r["redis_usec_per_message"],
            r.get("xadds_per_message", "-"),
            r["redis_cpu_usec_per_message"],
            r["generator_cpu_usec_per_message"],
            " / ".join(str(cpu.get(who, "-")) for who in ("redis", "generator", "node", "others")),
            f"{r['history_entries']} of {r['expected_in_history']}",
        ]
        rows.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(rows)


def command_line() -> int:
    """`python -m loadtest.publish`, the same as `python -m loadtest publish`."""
    parser = argparse.ArgumentParser(prog="python -m loadtest publish", description=__doc__)
    add_arguments(parser)
    return main(parser.parse_args())
