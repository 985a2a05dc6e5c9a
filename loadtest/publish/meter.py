"""What one case of the publish benchmark costs: Redis's own count of its commands
(`INFO commandstats`, reset with `CONFIG RESETSTAT` as the measured part begins), and the
CPU time of Redis, the node and this process (from /proc) over the same stretch."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from broadcaster.brokers.config import DEFAULT_CONFIG
from broadcaster.brokers.redis.keys import KeySpace

from ..node import cpu_seconds

KEYS = KeySpace(DEFAULT_CONFIG.prefix)


def commandstats(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Calls and microseconds of every command Redis ran since the last reset (the
    commands a function runs are counted too, under their own names)."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): {"calls": int(row["calls"]), "usec": int(row["usec"])}
        for name, row in stats.items()
        if not name.startswith(("cmdstat_config", "cmdstat_info"))  # ours, not the case's
    }


@dataclass
class Meter:
    """Measures one stretch: `start` resets Redis's statistics and notes the CPU times,
    `stop` reads them again."""

    client: redis.Redis
    redis_pid: int
    node_pid: int | None = None
    started: float | None = None
    elapsed: float = 0.0
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    _cpu0: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.client.config_resetstat()
        self._cpu0 = self._cpu()
        self.started = time.monotonic()

    def stop(self) -> None:
        assert self.started is not None, "stop before start"
        self.elapsed = time.monotonic() - self.started
        cpu = self._cpu()
        self.stats = commandstats(self.client)
        self.cpu = {who: cpu[who] - self._cpu0[who] for who in cpu}

    def _cpu(self) -> dict[str, float]:
        cpu = {"redis": cpu_seconds([self.redis_pid]), "generator": time.process_time()}
        if self.node_pid is not None:
            cpu["node"] = cpu_seconds([self.node_pid])
        cpu["machine"] = machine_busy()
        return cpu

    def _others(self) -> float:
        """CPU seconds the machine spent on anything but Redis, the node and this process
        (another developer's benchmark, say): how noisy the case's figures are."""
        ours = sum(used for who, used in self.cpu.items() if who != "machine")
        return max(self.cpu["machine"] - ours, 0.0)

    def figures(self, messages: int, command: str = "fcall") -> dict[str, Any]:
        """The case's figures for `messages` published in the measured stretch, Redis's
        cost read from `command` (`fcall`; `xadd` for the yardstick)."""
        seconds = self.elapsed
        row = self.stats.get(command, {"calls": 0, "usec": 0})
        per = (lambda total: round(total / messages, 2)) if messages else (lambda _: None)
        return {
            "messages": messages,
            "seconds": round(seconds, 3),
            "messages_per_second": round(messages / seconds) if seconds else None,
            "command": command,
            "calls": row["calls"],
            "usec_per_call": round(row["usec"] / row["calls"], 2) if row["calls"] else None,
            "redis_usec_per_message": per(row["usec"]),
            "redis_cpu_usec_per_message": per(self.cpu["redis"] * 1e6),
            "generator_cpu_usec_per_message": per(self.cpu["generator"] * 1e6),
            **(
                {"node_cpu_usec_per_message": per(self.cpu["node"] * 1e6)}
                if "node" in self.cpu
                else {}
            ),
            "cpu_percent": {
                **{who: round(100 * used / seconds, 1) for who, used in self.cpu.items()},
                "others": round(100 * self._others() / seconds, 1),
            },
            "commandstats": self.stats,
        }


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(n) for n in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def history_entries(client: redis.Redis) -> int:
    """The messages every channel's history holds in this Redis (at most the history's
    MAXLEN each)."""
    with client.pipeline(transaction=False) as pipe:
        for key in client.scan_iter(match=KEYS.history("*"), count=1000):
            pipe.xlen(key)
        return sum(int(n) for n in pipe.execute())
