"""Prometheus metrics: plain counts on the hot path, turned into metric families per scrape."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Literal, TypeVar, get_args

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# Every label value a labelled counter can take. Each series is exposed at 0 from the
# first scrape, so rate() queries and alerts see it before the first event.
RejectReason = Literal[
    "cap", "ip_cap", "unauthorized", "forbidden", "bad_request", "draining", "unavailable"
]
MalformedReason = Literal["utf8", "envelope", "forged"]
PublishError = Literal[
    "unauthorized",
    "forbidden",
    "bad_request",
    "too_large",
    "timeout",
    "too_many",
    "closed",
    "unavailable",
    "not_replicated",
]

REJECT_REASONS: tuple[RejectReason, ...] = get_args(RejectReason)
MALFORMED_REASONS: tuple[MalformedReason, ...] = get_args(MalformedReason)
PUBLISH_ERRORS: tuple[PublishError, ...] = get_args(PublishError)
Label = TypeVar("Label", bound=str)


@dataclass(slots=True)
class Counts:
    """Running totals, bumped as plain integers where things happen."""

    connections_opened: int = 0
    rejected: Counter[RejectReason] = field(
        default_factory=lambda: Counter(dict.fromkeys(REJECT_REASONS, 0))
    )
    messages_received: int = 0
    events_sent: int = 0
    events_replayed: int = 0
    bytes_sent: int = 0
    slow_disconnects: int = 0
    streams_closed: int = 0
    no_content: int = 0
    redis_reconnects: int = 0
    redis_failovers: int = 0
    publishes: int = 0
    publish_errors: Counter[PublishError] = field(
        default_factory=lambda: Counter(dict.fromkeys(PUBLISH_ERRORS, 0))
    )
    malformed: Counter[MalformedReason] = field(
        default_factory=lambda: Counter(dict.fromkeys(MALFORMED_REASONS, 0))
    )


class Metrics:
    """One node's metrics registry; no label carries a channel name."""

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]] | None = None) -> None:
        self.counts = Counts()
        self.registry = CollectorRegistry()
        self._gauges = gauges or {}
        self._families: list[Callable[[], Iterable[Metric]]] = []
        self.latency = Buckets(LATENCY_BUCKETS)
        self.registry.register(self)

    def gauge(self, name: str, text: str, read: Callable[[], float]) -> None:
        """Expose `read()` as gauge `name` at every scrape."""
        self._gauges[name] = (text, read)

    def collect_also(self, read: Callable[[], Iterable[Metric]]) -> None:
        """Expose the families `read()` returns at every scrape (a part's own metrics)."""
        self._families.append(read)

    def observe_published(self, published_ms: int | None) -> None:
        """Record the delivery latency of a message published at `published_ms`."""
        if published_ms is not None:
            self.latency.observe(time.time() - published_ms / 1000)

    def exposition(self) -> bytes:
        """The text format for GET /metrics."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """Build the metric families from the counts (prometheus-client collector API)."""
        c = self.counts
        for name, text, value in (
            ("broadcaster_connections", "Connections opened.", c.connections_opened),
            ("broadcaster_messages_received", "Messages from the broker.", c.messages_received),
            ("broadcaster_events_sent", "Events written to clients.", c.events_sent),
            ("broadcaster_events_replayed", "Events sent from history.", c.events_replayed),
            ("broadcaster_bytes_sent", "Bytes written to clients.", c.bytes_sent),
            ("broadcaster_slow_consumer_disconnects", "Slow clients cut off.", c.slow_disconnects),
            (
                "broadcaster_streams_closed",
                "Streams ended after the message that closed the last of their channels.",
                c.streams_closed,
            ),
            (
                "broadcaster_no_content",
                "Requests answered 204 No Content: every channel closed, nothing to send "
                "(an EventSource stops reconnecting).",
                c.no_content,
            ),
            ("broadcaster_redis_reconnects", "Redis reconnects.", c.redis_reconnects),
            (
                "broadcaster_redis_failovers",
                "Reconnects that found another primary (a new replication history).",
                c.redis_failovers,
            ),
            ("broadcaster_publish", "Publishes accepted by this node.", c.publishes),
        ):
            yield CounterMetricFamily(name, text, value=value)
        yield _labelled("broadcaster_connections_rejected", "Connections refused.", c.rejected)
        yield _labelled("broadcaster_publish_errors", "HTTP publishes refused.", c.publish_errors)
        yield _labelled(
            "broadcaster_messages_malformed", "Broker payloads repaired or dropped.", c.malformed
        )
        for name, (text, read) in self._gauges.items():
            yield GaugeMetricFamily(name, text, value=read())
        for families in self._families:
            yield from families()
        yield self.latency.family(
            "broadcaster_delivery_latency_seconds",
            "Seconds from publish (broker clock) to the write to client sockets.",
        )


class Buckets:
    """A histogram as plain counts.

    prometheus-client's Histogram takes a lock and scans its buckets at every observation;
    this one is observed once per message on the hot path, so it bisects and adds.
    """

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Count `value` (negative values, from clocks apart, count as 0)."""
        if value < 0:
            value = 0.0
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def family(self, name: str, text: str) -> HistogramMetricFamily:
        """The cumulative buckets, sum and count, as Prometheus wants them."""
        cumulative = list(accumulate(self._counts))
        bounds = [*map(floatToGoString, self._bounds), "+Inf"]
        return HistogramMetricFamily(
            name, text, buckets=list(zip(bounds, cumulative, strict=True)), sum_value=self._sum
        )


def _labelled(name: str, text: str, counts: Counter[Label]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text, labels=["reason"])
    for reason, value in sorted(counts.items()):
        family.add_metric([reason], value)
    return family
