"""One scrape for every worker: expositions merged, each series labelled with its worker."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from broadcaster.core.metrics import Metrics
from broadcaster.node.workers.metrics import merged


def exposition(events: int, connections: float) -> str:
    metrics = Metrics()
    metrics.counts.events_sent = events
    metrics.gauge("broadcaster_connections", "Open SSE connections.", lambda: connections)
    metrics.observe_published(0)
    return metrics.exposition().decode()


def test_every_worker_series_is_kept_and_labelled() -> None:
    text = merged([exposition(5, 3), None, exposition(7, 4)]).decode()
    families = {(f.name, f.type): f for f in text_string_to_metric_families(text)}
    sent = families["broadcaster_events_sent", "counter"].samples
    assert {(s.labels["worker"], s.value) for s in sent} == {("0", 5), ("2", 7)}
    # The counter `broadcaster_connections` (opened) and the gauge (open) stay apart.
    held = families["broadcaster_connections", "gauge"].samples
    assert {(s.labels["worker"], s.value) for s in held} == {("0", 3), ("2", 4)}
    assert len(families["broadcaster_connections", "counter"].samples) == 2
    latency = families["broadcaster_delivery_latency_seconds", "histogram"].samples
    assert {s.labels["worker"] for s in latency} == {"0", "2"}
    # One HELP and TYPE per family, as Prometheus requires.
    assert text.count("# TYPE broadcaster_events_sent_total counter") == 1
