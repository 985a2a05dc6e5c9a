"""Command line: `python -m loadtest <scenario> [options]`."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from . import publish, report
from .csub import default_client
from .measure import Recorder
from .pool import WorkerPool
from .scenarios import SCENARIOS, Run
from .target import target_for


def _rates(text: str) -> list[float]:
    return [float(r) for r in text.split(",") if r.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    sub = p.add_subparsers(dest="scenario", required=True)

    def add(name: str, help: str, clients: int, publish: str = "http") -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help)
        s.add_argument("--target", help="SSE URL to measure (default: start our own node)")
        s.add_argument(
            "--server",
            choices=("broadcaster", "nchan"),
            default="broadcaster",
            help="server to start and measure; nchan: nginx+Nchan+Redis, publishes to its /pub",
        )
        s.add_argument("--node-pid", type=int, help="pid of the --target node, for RSS")
        s.add_argument("--redis", action="store_true", help="own node: start redis-server too")
        s.add_argument("--redis-url", help="Redis of the --target node (for --publish redis|raw)")
        s.add_argument("--token", default="tok", help="bearer token for HTTP publish")
        s.add_argument("--publish", choices=("http", "redis", "raw"), default=publish)
        s.add_argument("--size", type=int, default=0, help="pad event data to this many bytes")
        s.add_argument("--clients", type=int, default=clients)
        s.add_argument("--workers", type=int, default=max(2, (os.cpu_count() or 2) - 1))
        s.add_argument("--connect-concurrency", type=int, default=200, help="per worker")
        s.add_argument("--connect-timeout", type=float, default=10.0, help="s per attempt")
        s.add_argument("--drain", type=float, default=10.0, help="max s to wait for stragglers")
        s.add_argument("--no-pin", action="store_true", help="do not pin the node to core 0")
        s.add_argument("--out", type=Path, help="result JSON (a .png plot is written beside)")
        s.add_argument(
            "--client",
            choices=("c", "python"),
            help="subscriber core: c (epoll, built with cc; the default when cc exists) or python",
        )
        return s

    b = add("broadcast", "many subscribers on one channel, sweeping the publish rate", 10_000)
    b.add_argument("--rates", type=_rates, default=[5, 10, 25, 50], help="msgs/s, e.g. 5,10")
    b.add_argument("--duration", type=float, default=10.0, help="seconds per rate step")
    s = add("streams", "one subscriber per channel, many channels", 0, publish="redis")
    s.add_argument("--channels", type=int, default=5000)
    s.add_argument("--rate", type=float, default=20.0, help="msgs/s per channel")
    s.add_argument("--duration", type=float, default=10.0)
    i = add("idle", "idle connections: connections held, RSS per connection", 15_000)
    i.add_argument("--duration", type=float, default=10.0, help="seconds to hold them")
    r = add("reconnect", "clients miss events, then reconnect at once with Last-Event-ID", 10_000)
    r.add_argument("--events", type=int, default=100, help="events published while away")
    r.add_argument("--missed-rate", type=float, default=200.0, help="msgs/s while away")
    r.add_argument("--restart", action="store_true", help="restart the node (needs --redis)")
    r.add_argument("--reconnect-concurrency", type=int, default=2000, help="per worker")
    sm = add("smoke", "quick check: 200 clients, 3 s broadcast, exit 1 on any gap", 200)
    sm.set_defaults(rates=[20.0], duration=3.0, drain=5.0, connect_timeout=3.0)
    pb = sub.add_parser(
        "publish",
        help="durable publishes/s and Redis CPU per message, each way of publishing",
        description=publish.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_arguments(pb)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.scenario == "publish":
        return publish.main(args)
    args.client = args.client or default_client()
    if args.scenario == "streams":
        args.clients = args.channels
    if args.scenario == "reconnect" and args.restart:
        args.redis = True
    if args.server == "nchan":
        args.publish = "nchan"  # Nchan takes publishes only on its HTTP publisher location
    own_redis = args.target is None and (args.redis or args.publish in ("redis", "raw"))
    started = time.time()
    with target_for(
        args.target,
        token=args.token,
        redis=own_redis,
        redis_url=args.redis_url,
        node_pid=args.node_pid,
        pin=not args.no_pin,
        server=args.server,
    ) as target:
        if target.generator_cores:
            os.sched_setaffinity(0, target.generator_cores)
        pool = WorkerPool(args.workers, target.generator_cores, client=args.client)
        try:
            run = Run(args, target, pool, Recorder(pool, target.node_pid))
            scenario = SCENARIOS["broadcast" if args.scenario == "smoke" else args.scenario]
            figures = _run_async(scenario(run))
        finally:
            pool.close()
    result: dict[str, Any] = {
        "scenario": args.scenario,
        "title": f"{args.server}: {args.clients} clients, publish via {args.publish}",
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "target": target.url,
        "notes": target.notes,
        "seconds": round(time.time() - started, 1),
        **figures,
        "series": run.rec.series,
        "marks": run.rec.marks,
    }
    out = args.out or Path("results") / f"{args.scenario}.json"
    png = report.write(result, out)
    summary = {k: v for k, v in result.items() if k not in ("series", "marks", "options")}
    print(json.dumps(summary, indent=2))
    print(f"wrote {out} and {png}", file=sys.stderr)
    if args.scenario == "smoke":
        return _smoke_verdict(result)
    return 0


def _run_async(coro: Any) -> Any:
    return uvloop.run(coro)


def _smoke_verdict(result: dict[str, Any]) -> int:
    step = result["steps"][0]
    ok = (
        step["delivered_events"] > 0
        and step["gaps"] == 0
        and step["duplicates"] == 0
        and step["undelivered_after_drain"] == 0
        and result["connect"]["failed"] == 0
    )
    print("smoke:", "OK" if ok else "FAILED", file=sys.stderr)
    return 0 if ok else 1
