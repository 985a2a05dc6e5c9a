"""Variants of `library.lua` side by side, in one redis-server: what each costs Redis per
message, A/B in the same run (the machine is shared and noisy; runs apart are not
comparable to a tenth of a µs).

`python -m loadtest.publish.variants OLD.lua NEW.lua [...] [--cases single,batch-key]
[--rounds 5] [--seconds 1]`

Each file is rendered as `Library` renders `library.lua` (the default settings) and loaded
as a library of its own, its functions renamed `<name>_<file stem>`. Every round runs
each (variant, case) once, in a random order: FLUSHALL, 0.3 s of warm-up, CONFIG
RESETSTAT, then `--seconds` of publishing and INFO commandstats. Messages of 100 bytes go
round 1,000 channels, as in `python -m loadtest publish`. Cases: `single` (pipelines of
100 `FCALL sse_publish 1 <channel> <data>`), `single-key` (with a unique idempotency key),
`batch-key` and `batch-nokey` (`FCALL sse_publish_batch` of 100). Printed: the median and
the lowest `cmdstat_fcall` µs per message over the rounds, and the median µs per message
of each command the function ran. Redis runs on the last core, this process on the others.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import redis

from broadcaster.brokers.redis.library import Library

from ..node import start_redis

CASES = ("single", "single-key", "batch-key", "batch-nokey")
PER_CALL = 100  # messages per pipeline or batch
CHANNELS = [f"bench.{n}" for n in range(1000)]
DATA = "x" * 100


def render(source: str, tag: str) -> str:
    """`source` as `Library().code()` renders library.lua, as the library `bc_<tag>` with
    its functions renamed `<name>_<tag>`."""
    code = Library().code(source)
    code = code.replace("#!lua name=broadcaster", f"#!lua name=bc_{tag}", 1)
    return re.sub(r'register_function\("(\w+)"', rf'register_function("\1_{tag}"', code)


class Sender:
    """Publishes one case's messages, round the channels, through one variant."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.turn = itertools.count()
        self.keys = itertools.count(1)
        self.prefix = f"py-{secrets.token_urlsafe(9)}-"

    def key(self) -> str:
        return f"{self.prefix}{next(self.keys):x}"

    def channel(self) -> str:
        return CHANNELS[next(self.turn) % len(CHANNELS)]

    def send(self, tag: str, case: str) -> int:
        """One pipeline or batch; the messages it published."""
        if case.startswith("single"):
            pipe = self.client.pipeline(transaction=False)
            for _ in range(PER_CALL):
                extra = ["", self.key()] if case == "single-key" else []
                pipe.fcall(f"sse_publish_{tag}", 1, self.channel(), DATA, *extra)
            pipe.execute(raise_on_error=True)
            return PER_CALL
        args: list[str] = []
        for _ in range(PER_CALL):
            args += [self.channel(), DATA, "", self.key() if case == "batch-key" else "", ""]
        call = ""  # (the message keys are the case: a call key would stand for them)
        ids = self.client.fcall(f"sse_publish_batch_{tag}", 1, args[0], PER_CALL, call, *args)
        if not all(isinstance(one, bytes) for one in ids):
            raise RuntimeError(f"{tag}: {ids[:3]}")
        return PER_CALL


def measure(
    client: redis.Redis, sender: Sender, tag: str, case: str, seconds: float
) -> dict[str, float]:
    """µs per message of FCALL and of each command it ran, over `seconds` after a warm-up."""
    client.flushall()
    ends = time.monotonic() + 0.3
    while time.monotonic() < ends:
        sender.send(tag, case)
    client.config_resetstat()
    ends, messages = time.monotonic() + seconds, 0
    while time.monotonic() < ends:
        messages += sender.send(tag, case)
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(row["usec"]) / messages
        for name, row in stats.items()
        if not name.startswith(("cmdstat_config", "cmdstat_info", "cmdstat_flushall"))
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="variants of library.lua")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    cases = args.cases.split(",")
    if not set(cases) <= set(CASES) or not 1 <= args.rounds <= 50 or not 0 < args.seconds <= 10:
        raise SystemExit(f"--cases of {', '.join(CASES)}; --rounds 1-50; --seconds up to 10")
    tags = [re.sub(r"\W", "_", path.stem) for path in args.files]
    if len(set(tags)) != len(tags):
        raise SystemExit("the variants' file names must differ")
    cores = sorted(os.sched_getaffinity(0))
    redis_core = cores[-1] if len(cores) > 1 else None
    if redis_core is not None:
        os.sched_setaffinity(0, cores[:-1])
    server, url = start_redis(Path(tempfile.mkdtemp(prefix="loadtest-variants-")), redis_core)
    try:
        client = redis.Redis.from_url(url)
        for path, tag in zip(args.files, tags, strict=True):
            client.function_load(render(path.read_text("utf-8"), tag), replace=True)
        sender = Sender(client)
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            order = [(tag, case) for tag in tags for case in cases]
            random.shuffle(order)
            for tag, case in order:
                runs.setdefault((tag, case), []).append(
                    measure(client, sender, tag, case, args.seconds)
                )
        for case in cases:
            for tag in tags:
                rows = runs[(tag, case)]
                fcall = [row["fcall"] for row in rows]
                names = sorted({name for row in rows for name in row} - {"fcall"})
                inner = " ".join(
                    f"{name} {statistics.median(row.get(name, 0.0) for row in rows):.2f}"
                    for name in names
                )
                print(
                    f"{case:12} {tag:16} median {statistics.median(fcall):5.2f} "
                    f"lowest {min(fcall):5.2f} µs/msg  [{inner}]"
                )
        client.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
