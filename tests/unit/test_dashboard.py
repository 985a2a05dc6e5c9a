"""The Grafana dashboard (deploy/grafana/broadcaster.json), checked without Grafana: its
structure, every query parsed by promtool, and every metric it names exposed by a node."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from broadcaster.brokers.redis.link_metrics import link_families
from broadcaster.brokers.redis.shards import LinkCounts, LinkState
from broadcaster.cluster.configs import deploy_file
from tests.support.nodes import StartClient

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# What Grafana puts in place of its variables before a query reaches Prometheus (the
# values only need to be valid PromQL there).
GRAFANA_VARIABLES = {
    "__rate_interval": "20s",
    "__interval": "5s",
    "__range": "1h",
    "instance": ".+",  # `All`: the variable's allValue
}
# Labels Prometheus adds to every scraped series, and the one --workers adds.
TARGET_LABELS = {"job", "instance", "worker"}


def dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA / "broadcaster.json").read_text())  # type: ignore[no-any-return]


def panels() -> Iterator[dict[str, Any]]:
    """Every panel but rows (and the panels inside collapsed rows)."""
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL) of every target."""
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in panels()
        for target in panel["targets"]
    ]


def substituted(expr: str) -> str:
    """The query as Grafana sends it, every variable replaced."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown variable ${name} in {expr}"
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def promtool_check(expressions: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on the expressions as recording rules: each must parse."""
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus"
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": expr}
                    for n, expr in enumerate(expressions)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return subprocess.run(
        [binary, "check", "rules", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_dashboard_is_a_grafana_dashboard_with_two_variables() -> None:
    board = dashboard()
    assert board["uid"] == "broadcaster" and board["title"] == "broadcaster"
    assert board["schemaVersion"] >= 36  # panel and target datasources as {type, uid}
    assert board["id"] is None  # provisioned: Grafana assigns it
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert set(variables) == {"datasource", "instance"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    # The provisioned data source is the default choice.
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert variables["datasource"]["current"]["value"] == provisioned["uid"]
    instance = variables["instance"]
    assert instance["type"] == "query" and instance["datasource"] == DATASOURCE
    assert instance["multi"] and instance["includeAll"]
    assert instance["allValue"] == GRAFANA_VARIABLES["instance"]
    assert instance["definition"].startswith("label_values(broadcaster_")
    assert instance["definition"] == instance["query"]["query"]


def test_panels_have_unique_ids_a_datasource_and_targets_and_do_not_overlap() -> None:
    board = dashboard()
    everything = [*board["panels"], *(p for r in board["panels"] for p in r.get("panels", []))]
    ids = [panel["id"] for panel in everything]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in everything:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[x, y] = panel["title"]
    titles = [panel["title"] for panel in panels()]
    assert len(titles) == len(set(titles))
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["description"], panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["datasource"] == DATASOURCE and target["expr"].strip(), panel["title"]


def test_every_query_parses(tmp_path: Path) -> None:
    result = promtool_check([substituted(expr) for _, expr in queries()], tmp_path)
    names = "\n".join(f"query_{n}: {where}" for n, (where, _) in enumerate(queries()))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{names}"
    assert f"SUCCESS: {len(queries())} rules found" in result.stdout
    # The check catches what it is there for.
    broken = promtool_check(["sum by (instance) (rate(broadcaster_publish_total[20s])"], tmp_path)
    assert broken.returncode != 0


def test_every_selector_takes_the_scrape_job_and_the_instance_variable() -> None:
    job = yaml.safe_load(deploy_file("prometheus.yml"))["scrape_configs"][0]["job_name"]
    for where, expr in queries():
        names = re.findall(r"\bbroadcaster_\w+", expr)
        selectors = re.findall(r"\b(broadcaster_\w+)\{([^}]*)\}", expr)
        assert names and len(selectors) == len(names), f"{where}: a metric without matchers"
        for _, matchers in selectors:
            assert f'job="{job}"' in matchers and 'instance=~"$instance"' in matchers, where


def shard_link_exposition() -> str:
    """What a node on a Redis Cluster adds to its metrics (one series per shard primary;
    the node below, on the embedded broker, has none): one link's."""

    class Links(Collector):
        def collect(self) -> Iterator[Metric]:
            return link_families([LinkState("redis-c1:6379", True, LinkCounts())])

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Links())
    return generate_latest(registry).decode()


async def test_every_metric_and_label_is_one_a_node_exposes(start_client: StartClient) -> None:
    client = await start_client()
    answer = await client.get("/metrics")
    assert answer.status == 200
    kinds: dict[str, str] = {}  # series name -> its family's type
    labels = set(TARGET_LABELS)
    for text in (await answer.text(), shard_link_exposition()):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                kinds[sample.name] = family.type
                labels |= set(sample.labels)
    used = set()
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "instance")
    for name in re.findall(r"\bbroadcaster_\w+", variable["definition"]):
        assert name in kinds, f"the instance variable: {name} is not exposed"
    for where, expr in queries():
        for name in re.findall(r"\bbroadcaster_\w+", expr):
            assert name in kinds, f"{where}: {name} is not exposed"
            used.add(name)
        # rate() and increase() of counters (and histogram buckets) only; gauges as they are.
        for name in set(re.findall(r"\bbroadcaster_\w+", expr)):
            if re.search(rf"\b(rate|increase)\({name}\{{", expr):
                assert kinds[name] in ("counter", "histogram"), f"{where}: rate of gauge {name}"
            else:
                assert kinds[name] == "gauge", f"{where}: {name} needs rate() or increase()"
        for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in grouping.split(","):
                assert label.strip() in labels, f"{where}: no series has label {label}"
    # What issue 24 asks the dashboard to show.
    assert used >= {
        "broadcaster_connections",
        "broadcaster_events_sent_total",
        "broadcaster_events_replayed_total",
        "broadcaster_publish_total",
        "broadcaster_delivery_latency_seconds_bucket",
        "broadcaster_connections_rejected_total",
        "broadcaster_slow_consumer_disconnects_total",
        "broadcaster_streams_closed_total",
        "broadcaster_no_content_total",
        "broadcaster_redis_connected",
        "broadcaster_redis_reconnects_total",
        "broadcaster_redis_failovers_total",
        "broadcaster_redis_shard_connected",
    }


def test_the_latency_panels_are_quantiles_of_bucket_rates() -> None:
    quantiles = [
        expr for _, expr in queries() if "broadcaster_delivery_latency_seconds_bucket" in expr
    ]
    assert quantiles
    for expr in quantiles:
        assert re.match(r"histogram_quantile\(0\.\d+, sum by \((\w+, )?le\) \(rate\(", expr)
    found = {re.match(r"histogram_quantile\((0\.\d+),", expr).group(1) for expr in quantiles}  # type: ignore[union-attr]
    assert found >= {"0.5", "0.9", "0.99"}


def test_the_docs_describe_every_panel() -> None:
    page = (ROOT / "docs" / "dashboard.md").read_text()
    headings = set(re.findall(r"^#+ (.+)$", page, re.M))
    missing = [panel["title"] for panel in panels() if panel["title"] not in headings]
    assert missing == [], "describe them in docs/dashboard.md"


@pytest.mark.parametrize(
    ("expr", "sent"),
    [
        ('rate(x{instance=~"$instance"}[$__rate_interval])', 'rate(x{instance=~".+"}[20s])'),
        ("increase(x[${__range}])", "increase(x[1h])"),
    ],
)
def test_grafana_variables_are_replaced_before_parsing(expr: str, sent: str) -> None:
    assert substituted(expr) == sent
    with pytest.raises(AssertionError, match="unknown variable"):
        substituted("rate(x[$nope])")
