"""The metrics of a node's links to the shard primaries of a Redis Cluster, labelled by
the primary's address (never by channel)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from broadcaster.brokers.redis.shards import LinkState


def link_families(links: list[LinkState]) -> Iterator[Metric]:
    """`broadcaster_redis_shard_connected`, `..._reconnects_total` and
    `..._sunsubscribes_total`, one series per primary."""
    connected = GaugeMetricFamily(
        "broadcaster_redis_shard_connected",
        "Whether the pub/sub link to a shard primary is up.",
        labels=["shard"],
    )
    reconnects = CounterMetricFamily(
        "broadcaster_redis_shard_reconnects",
        "Pub/sub link sessions to a shard primary begun after a loss.",
        labels=["shard"],
    )
    moved = CounterMetricFamily(
        "broadcaster_redis_shard_sunsubscribes",
        "Subscriptions a shard dropped or refused (a slot moved: sunsubscribe, MOVED).",
        labels=["shard"],
    )
    for link in links:
        connected.add_metric([link.address], float(link.connected))
        reconnects.add_metric([link.address], link.counts.reconnects)
        moved.add_metric([link.address], link.counts.sunsubscribes)
    yield from (connected, reconnects, moved)
