"""deploy/prometheus/rules.yml: valid, unit-tested by promtool on synthetic series, every
alert documented, and every metric it reads one a node really exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from broadcaster import create_app
from broadcaster.brokers.redis.shards import LinkCounts, LinkState
from broadcaster.cluster.configs import PROMETHEUS_RULES
from broadcaster.node.state import BROKER, METRICS
from broadcaster.settings import Settings
from tests.support.nodes import StartClient

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / PROMETHEUS_RULES
RULES_TEST = RULES.with_name("rules_test.yml")

# Series Prometheus makes itself, not read from /metrics.
SCRAPE_SERIES = {"up"}
# PromQL's keywords and aggregation operators: words in an expression that are no metric.
PROMQL_WORDS = {
    *("and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"),
    *("bool", "offset", "atan2", "inf", "nan"),
    *("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"),
    *("bottomk", "topk", "quantile"),
}


def promtool(*args: str) -> None:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus (Debian's has it)"
    done = subprocess.run(
        [binary, *args], check=False, cwd=RULES.parent, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (no `{__name__=...}` selectors)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, subqueries
    # Label lists: `by (job, instance)`, `on (instance) group_left (reason)`.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for found in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?", text):
        word, call = found.groups()
        if call is None and word.lower() not in PROMQL_WORDS:
            names.add(word)
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", {"up"}),
        ('up{job="broadcaster", instance=~"a|b"} == 0', {"up"}),
        ("rate(a_total[5m]) * 60 > 1e3", {"a_total"}),
        ('sum by (job, le) (rate(h_bucket{le!="+Inf"}[5m] offset 1h))', {"h_bucket"}),
        ("sum(rate(x_total[1m])) without (worker)", {"x_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))", {"h_bucket"}),
        (
            "a:b:rate5m / on (instance) group_left (reason)\nc_total > bool 0.5",
            {"a:b:rate5m", "c_total"},
        ),
        ("min by (instance) (g) == 0 and on (instance) k", {"g", "k"}),
        ('max_over_time(g[10m:1m]) > 0 unless absent(q{x="sum(y)"})', {"g", "q"}),
        ("count(sum by (instance) (g)) < 2", {"g"}),
    ],
)
def test_metric_names_reads_selectors_only(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def test_promtool_checks_the_config_and_its_rules() -> None:
    promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    promtool("check", "rules", str(RULES))


def test_promtool_unit_tests_pass() -> None:
    promtool("test", "rules", str(RULES_TEST))


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for alert in alerts():
        name = alert["alert"]
        outcomes = {bool(case["exp_alerts"]) for case in cases if case["alertname"] == name}
        assert outcomes == {True, False}, f"{name}: test it firing and not firing"


def test_every_alert_has_a_duration_severity_and_one_line_annotations() -> None:
    assert alerts()
    for alert in alerts():
        name = alert["alert"]
        assert "for" in alert, name
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        for annotation in ("summary", "description"):
            text = alert["annotations"][annotation]
            assert text and "\n" not in text, f"{name}: one-line {annotation}"


def test_every_alert_is_documented() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for alert in alerts():
        assert f"`{alert['alert']}`" in operations, f"docs/operations.md#alerts: {alert['alert']}"
        assert f"`{alert['alert']}`" in readme, f"README.md's alert list: {alert['alert']}"


async def exposed(start_client: StartClient, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The sample names of a node's GET /metrics, and the shard links' a node on a Redis
    Cluster adds."""
    client = await start_client()
    text = await (await client.get("/metrics")).text()
    cluster = create_app(Settings(redis_url="redis+cluster://127.0.0.1:1"))
    link = LinkState("127.0.0.1:7000", True, LinkCounts())
    monkeypatch.setattr(cluster[BROKER], "links", lambda: [link])
    text += cluster[METRICS].exposition().decode()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


async def test_every_metric_a_rule_reads_is_exposed(
    start_client: StartClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = await exposed(start_client, monkeypatch)
    assert "broadcaster_redis_shard_connected" in names
    assert "broadcaster_delivery_latency_seconds_bucket" in names
    recorded: set[str] = set()
    for rule in rules():  # in order: a rule reads only what rules before it record
        read = metric_names(rule["expr"])
        assert read, rule["expr"]
        unknown = read - names - recorded - SCRAPE_SERIES
        assert not unknown, f"{rule.get('alert') or rule['record']} reads {unknown}"
        if "record" in rule:
            recorded.add(rule["record"])
