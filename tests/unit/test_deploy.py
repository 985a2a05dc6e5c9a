"""The Docker topology, checked statically (no Docker engine here), and its loopback rendering."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from broadcaster.cluster import deploy_file, render_nginx, render_prometheus
from broadcaster.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_compose_has_redis_three_nodes_a_balancer_and_prometheus() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "node1", "node2", "node3", "lb", "prometheus"}
    assert "--appendonly" in services["redis"]["command"]
    assert "6379:6379" in services["redis"]["ports"]
    assert "8080:8080" in services["lb"]["ports"]
    assert all("healthcheck" in service for service in services.values())


def test_every_node_is_built_here_with_its_own_id_and_valid_settings() -> None:
    services = compose()["services"]
    ids = set()
    for name in ("node1", "node2", "node3"):
        node = services[name]
        assert node["build"] == "."
        env = {k: str(v) for k, v in node["environment"].items()}
        ids.add(env["BROADCASTER_NODE_ID"])
        assert env["BROADCASTER_REDIS_URL"] == "redis://redis:6379/0"
        settings = Settings.model_validate(
            {k.removeprefix("BROADCASTER_").lower(): v for k, v in env.items()}
        )
        assert settings.redis_url is not None
        assert "/readyz" in " ".join(node["healthcheck"]["test"])
    assert len(ids) == 3


def test_mounted_configs_exist_and_name_every_node() -> None:
    services = compose()["services"]
    for service in ("lb", "prometheus"):
        for volume in services[service]["volumes"]:
            source = volume.split(":")[0]
            assert (ROOT / source).is_file(), source
    nginx = deploy_file("nginx.conf")
    prometheus = yaml.safe_load(deploy_file("prometheus.yml"))
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    for name in ("node1", "node2", "node3"):
        assert f"server {name}:8080" in nginx
        assert f"{name}:8080" in targets


def test_the_balancer_is_tuned_for_streams() -> None:
    nginx = deploy_file("nginx.conf")
    for directive in (
        "proxy_buffering off;",
        "proxy_read_timeout 1h;",
        "proxy_http_version 1.1;",
        "proxy_next_upstream error timeout http_502 http_503 http_429;",
        "gzip off;",
        "client_header_timeout",
    ):
        assert directive in nginx, directive


def test_the_dockerfile_runs_a_node_with_a_health_check() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", dockerfile, re.M)
    assert "pip install" in dockerfile and "COPY broadcaster" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/readyz" in dockerfile
    assert 'CMD ["broadcaster", "serve"]' in dockerfile
    assert "EXPOSE 8080" in dockerfile


def test_loopback_rendering_changes_only_nodes_and_listen() -> None:
    original = deploy_file("nginx.conf")
    rendered = render_nginx(original, 9000, [9001, 9002])
    assert "server 127.0.0.1:9001 max_fails=1 fail_timeout=2s;" in rendered
    assert "node1" not in rendered and "listen 127.0.0.1:9000;" in rendered

    def strip(text: str) -> list[str]:
        return [
            line for line in text.splitlines() if "server " not in line and "listen" not in line
        ]

    assert strip(rendered) == strip(original)
    prometheus = yaml.safe_load(render_prometheus(deploy_file("prometheus.yml"), [9001, 9002]))
    job = prometheus["scrape_configs"][0]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9001", "127.0.0.1:9002"]
    assert prometheus["global"] == yaml.safe_load(deploy_file("prometheus.yml"))["global"]
