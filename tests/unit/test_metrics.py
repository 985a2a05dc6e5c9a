"""GET /metrics: the names the operations issue promises, with real counts."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

from broadcaster import create_app
from broadcaster.brokers.memory import MemoryBroker
from broadcaster.brokers.protocol import NotConfirmed
from broadcaster.core.publication import Publication
from broadcaster.settings import Settings
from tests.support.client import subscribe
from tests.support.nodes import Client, MakeClient, StartClient, base_url
from tests.support.wait import eventually


async def scrape(client: Client) -> dict[str, float]:
    answer = await client.get("/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await answer.text()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


async def test_counts_follow_what_happens(start_client: StartClient) -> None:
    client = await start_client(publish_token="t", max_connections=1, heartbeat_interval=60)
    base = base_url(client)
    async with subscribe(client.session, base, ["a"]) as sub:
        for n in range(3):
            body = {"channel": "a", "data": f"m{n}"}
            assert (
                await client.post("/publish", json=body, headers={"Authorization": "Bearer t"})
            ).status == 200
        await sub.wait_for(3)
        assert (await client.get("/events?channel=b")).status == 503
        assert (await client.get("/events?channel=bad%20name")).status == 400
        m = await scrape(client)
        assert m["broadcaster_connections"] == 1
        assert m["broadcaster_channels"] == 1
        assert m["broadcaster_connections_total"] == 1
        assert m["broadcaster_publish_total"] == 3
        assert m["broadcaster_messages_received_total"] == 3
        assert m["broadcaster_events_sent_total"] == 3
        assert m["broadcaster_bytes_sent_total"] >= len(b"".join(sub.raw.split(b"\n\n")[1:]))
        assert m["broadcaster_connections_rejected_total{reason=cap}"] == 1
        assert m["broadcaster_connections_rejected_total{reason=bad_request}"] == 1
        rejected = [v for k, v in m.items() if k.startswith("broadcaster_connections_rejected")]
        assert sum(rejected) == 2, "each refusal counts once"
        assert m["broadcaster_delivery_latency_seconds_count"] == 3
        assert m["broadcaster_redis_connected"] == 1

    async def released() -> bool:
        return (await scrape(client))["broadcaster_connections"] == 0

    await eventually(released, 5, "the first connection to be released")
    headers = {"Last-Event-ID": sub.events[0].id}
    async with subscribe(client.session, base, ["a"], headers) as again:
        await again.wait_for(2)
        assert (await scrape(client))["broadcaster_events_replayed_total"] == 2
    assert not any("channel=" in name for name in await scrape(client))


async def test_every_labelled_series_exists_from_the_first_scrape(
    start_client: StartClient,
) -> None:
    client = await start_client()
    m = await scrape(client)
    for reason in ("cap", "ip_cap", "unauthorized", "forbidden", "bad_request", "draining"):
        assert m[f"broadcaster_connections_rejected_total{{reason={reason}}}"] == 0
    for reason in ("utf8", "envelope", "forged"):
        assert m[f"broadcaster_messages_malformed_total{{reason={reason}}}"] == 0
    for reason in ("bad_request", "unauthorized", "unavailable", "not_replicated"):
        assert m[f"broadcaster_publish_errors_total{{reason={reason}}}"] == 0


class Unconfirmed(MemoryBroker):
    """Replicas that never confirm: every publish is refused (`WAIT` timed out)."""

    async def publish(self, batch: Sequence[Publication]) -> list[str]:
        raise NotConfirmed("0 of 1 replicas confirmed the publish in time")


async def test_publish_refusals_count_by_reason_and_the_cap_is_exposed(
    aiohttp_client: MakeClient,
) -> None:
    settings = Settings(publish_token="t", max_connections=7)
    client = await aiohttp_client(create_app(settings, Unconfirmed()))
    auth = {"Authorization": "Bearer t"}
    body = {"channel": "a", "data": "m"}
    assert (await client.post("/publish", json=body, headers=auth)).status == 503
    assert (await client.post("/publish", json=body)).status == 401
    assert (await client.post("/publish", data=b"{", headers=auth)).status == 400
    assert (await client.post("/publish", json={"channel": "a"}, headers=auth)).status == 400
    m = await scrape(client)
    errors = {k: v for k, v in m.items() if k.startswith("broadcaster_publish_errors_total")}
    assert {k: v for k, v in errors.items() if v} == {
        "broadcaster_publish_errors_total{reason=not_replicated}": 1,
        "broadcaster_publish_errors_total{reason=unauthorized}": 1,
        "broadcaster_publish_errors_total{reason=bad_request}": 2,
    }
    assert m["broadcaster_publish_total"] == 0
    assert m["broadcaster_max_connections"] == 7
