"""Connection caps, per-address rate limits, and who the client is behind proxies."""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal

from aiohttp import web

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConnectionLimiter:
    """Counts open streams; `acquire` checks and takes a slot in one synchronous step."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self._max_total = max_total
        self._max_per_ip = max_per_ip
        self._total = 0
        self._per_ip: Counter[str] = Counter()

    def acquire(self, ip: str) -> Literal["cap", "ip_cap"] | None:
        """Take a slot for `ip`; returns why not (`cap` or `ip_cap`) when full."""
        if self._total >= self._max_total:
            return "cap"
        if self._max_per_ip and self._per_ip[ip] >= self._max_per_ip:
            return "ip_cap"
        self._total += 1
        self._per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        """Give back the slot `acquire` took."""
        self._total -= 1
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]


def parse_networks(entries: Sequence[str]) -> tuple[IPNetwork, ...]:
    """Addresses or CIDR blocks; raises ValueError naming a bad entry."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def client_ip(request: web.Request, trusted: tuple[IPNetwork, ...]) -> str:
    """The socket's peer, or, when that peer is a trusted proxy, the first untrusted
    address in X-Forwarded-For counting from the right (what the proxies saw)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    address = str(peer[0]) if peer else "unknown"
    if not trusted or not _is_trusted(address, trusted):
        return address
    chain = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([hop for hop in chain if hop]):
        if not _is_trusted(hop, trusted):
            return hop
    return address


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # garbage in X-Forwarded-For is never a trusted proxy
    return any(ip in network for network in trusted)


class RateLimiter:
    """At most `limit` hits per key in each fixed window of `window` seconds.

    Memory is bounded: it remembers at most `max_keys` keys per window, and a key it
    cannot remember is refused (for the rest of the window) rather than let through.
    """

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window = window
        self._max_keys = max_keys
        self._clock = clock
        self._window_start = clock()
        self._hits: Counter[str] = Counter()

    def hit(self, key: str) -> float | None:
        """Count one hit for `key`: None when allowed, else seconds until the next window."""
        now = self._clock()
        if now - self._window_start >= self._window:
            self._window_start, self._hits = now, Counter()
        if self._hits[key] >= self._limit or (
            key not in self._hits and len(self._hits) >= self._max_keys
        ):
            return self._window_start + self._window - now
        self._hits[key] += 1
        return None
