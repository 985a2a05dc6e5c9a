"""The Docker topology, checked statically (no Docker engine here), and its loopback rendering."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from broadcaster.brokers.redis.client import ClusterURL
from broadcaster.cluster.configs import (
    PROMETHEUS_RULES,
    deploy_file,
    render_nginx,
    render_prometheus,
)
from broadcaster.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


PASSWORD = "0123abcd"


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:+replacement} and ${VAR:?error}
    substitution."""

    def value(match: re.Match[str]) -> str:
        name, operator, word = match.group(1), match.group(2) or "", match.group(3) or ""
        if operator == ":+":
            return word if env.get(name) else ""
        if env.get(name):
            return env[name]
        if operator == ":?":
            raise AssertionError(f"compose refuses to start: {word}")
        return word if operator == ":-" else ""

    # Innermost first: a default may hold another ${...}.
    pattern = re.compile(r"\$\{(\w+)(:[-?+])?([^}$]*)\}")
    while (replaced := pattern.sub(value, text)) != text:
        text = replaced
    return text.replace("$$", "$")


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    env = {"REDIS_PASSWORD": PASSWORD} if env is None else env
    text = interpolate((ROOT / "docker-compose.yml").read_text(), env)
    return yaml.safe_load(text)  # type: ignore[no-any-return]


CLUSTER_SERVERS = [f"redis-c{n}" for n in range(1, 7)]  # the `cluster` profile
SENTINEL_URL = (
    "redis+sentinel://:${REDIS_PASSWORD}@sentinel1:26379,sentinel2:26379,sentinel3:26379/primary"
)
CLUSTER_URL = "redis+cluster://:${REDIS_PASSWORD}@" + ",".join(
    f"{name}:6379" for name in CLUSTER_SERVERS
)


def fixed_address(service: dict[str, Any]) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(service["networks"]["backend"]["ipv4_address"])


def test_compose_has_redis_three_nodes_a_balancer_prometheus_and_profiles() -> None:
    services = compose()["services"]
    assert set(services) == {
        *("redis", "node1", "node2", "node3", "lb", "prometheus", "demo"),
        *("redis-replica", "redis-replica2", "sentinel1", "sentinel2", "sentinel3"),
        *CLUSTER_SERVERS,
        "redis-cluster-create",
        "grafana",
    }
    for name in ("redis-replica", "redis-replica2", "sentinel1", "sentinel2", "sentinel3"):
        assert services[name]["profiles"] == ["ha"]
    for name in [*CLUSTER_SERVERS, "redis-cluster-create"]:
        assert services[name]["profiles"] == ["cluster"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["lb"]["ports"] == ["8080:8080"]
    assert services["demo"]["profiles"] == ["demo"]
    assert services["grafana"]["profiles"] == ["grafana"]
    assert services["demo"]["command"] == ["broadcaster", "demo"]
    one_shot = ("demo", "redis-cluster-create")  # (a producer; a job that ends)
    assert all("healthcheck" in s for name, s in services.items() if name not in one_shot)


@pytest.mark.parametrize("password", [PASSWORD, ""])
def test_redis_is_published_nowhere_and_takes_the_password_when_one_is_set(
    password: str,
) -> None:
    # A fresh checkout starts with no .env: no password (Redis is on the internal network
    # only); with REDIS_PASSWORD set, every server and node uses it.
    services = compose({"REDIS_PASSWORD": password} if password else {})["services"]
    redis = services["redis"]
    assert "ports" not in redis, "Redis must not be reachable from other hosts"
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == password  # ("": no password)
    assert redis["environment"]["REDISCLI_AUTH"] == password  # for docker compose exec
    for name in ("node1", "node2", "node3", "demo"):
        url = services[name]["environment"]["BROADCASTER_REDIS_URL"]
        assert url == (f"redis://:{password}@redis:6379/0" if password else "redis://redis:6379/0")
        assert Settings(redis_url=url).redis_url == url
    # The docs' `ha` and `cluster` URLs hold `:${REDIS_PASSWORD}@`: without one, `:@`.
    for url in (SENTINEL_URL, CLUSTER_URL):
        given = url.replace("${REDIS_PASSWORD}", password)
        env = {"REDIS_PASSWORD": password, "BROADCASTER_REDIS_URL": given}
        node = compose(env)["services"]["node1"]["environment"]
        assert Settings(redis_url=node["BROADCASTER_REDIS_URL"]).redis_url == given


@pytest.mark.parametrize("password", [PASSWORD, ""])
def test_a_sentinel_writes_its_config_with_the_password_or_without(
    tmp_path: Path, password: str
) -> None:
    script = compose({"REDIS_PASSWORD": password})["services"]["sentinel1"]["command"][-1]
    conf = tmp_path / "sentinel.conf"
    script = script.replace("/tmp/sentinel.conf", str(conf)).replace(" --sentinel", "")
    script = script.replace("exec redis-server", "exec cat")  # (what it would start with)
    shown = subprocess.run(
        ["sh", "-c", script],
        env={"REDIS_PASSWORD": password},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "sentinel monitor primary redis 6379 2" in shown.stdout
    assert ("auth-pass primary " + PASSWORD in shown.stdout) == bool(password)
    assert ("auth-pass" in shown.stdout) == bool(password)


def test_only_the_balancer_is_public_and_only_it_is_trusted() -> None:
    config = compose()
    services = config["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert name == "lb" or str(port).startswith("127.0.0.1:"), (name, port)
    ipam = config["networks"]["backend"]["ipam"]["config"][0]
    subnet, dynamic = ipaddress.ip_network(ipam["subnet"]), ipaddress.ip_network(ipam["ip_range"])
    balancer = ipaddress.ip_address(services["lb"]["networks"]["backend"]["ipv4_address"])
    assert balancer in subnet
    # Fixed addresses lie outside the range the others get theirs from: none is taken
    # before its owner starts.
    fixed = [balancer, *(fixed_address(services[name]) for name in CLUSTER_SERVERS)]
    assert dynamic.subnet_of(subnet)  # type: ignore[arg-type]
    assert all(address in subnet and address not in dynamic for address in fixed)
    assert len(set(fixed)) == len(fixed)
    for name in ("node1", "node2", "node3"):
        trusted = Settings(
            trusted_proxies=services[name]["environment"]["BROADCASTER_TRUSTED_PROXIES"]
        ).trusted_proxies
        assert [ipaddress.ip_network(t) for t in trusted] == [ipaddress.ip_network(balancer)]


def test_the_balancer_may_open_what_nginx_asks_for() -> None:
    nofile = compose()["services"]["lb"]["ulimits"]["nofile"]
    wanted = int(re.search(r"worker_rlimit_nofile (\d+);", deploy_file("nginx.conf")).group(1))  # type: ignore[union-attr]
    assert nofile["soft"] >= wanted and nofile["hard"] >= wanted


def test_every_node_is_built_here_with_its_own_id_and_valid_settings() -> None:
    services = compose()["services"]
    ids = set()
    for name in ("node1", "node2", "node3"):
        node = services[name]
        assert node["build"] == "."
        env = {k: str(v) for k, v in node["environment"].items()}
        ids.add(env["BROADCASTER_NODE_ID"])
        settings = Settings.model_validate(
            {k.removeprefix("BROADCASTER_").lower(): v for k, v in env.items()}
        )
        assert settings.redis_url is not None
        assert settings.demo == "off"
        assert "/readyz" in " ".join(node["healthcheck"]["test"])
    assert len(ids) == 3
    assert (
        compose({"REDIS_PASSWORD": "x", "BROADCASTER_DEMO": "auto"})["services"]["node1"][
            "environment"
        ]["BROADCASTER_DEMO"]
        == "auto"
    )


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


def test_prometheus_loads_the_rules_in_compose_and_in_the_package() -> None:
    config = yaml.safe_load(deploy_file("prometheus.yml"))
    assert config["rule_files"] == [PROMETHEUS_RULES]
    mounts = compose()["services"]["prometheus"]["volumes"]
    # Relative to the config file, in the container as in deploy/.
    assert f"./deploy/{PROMETHEUS_RULES}:/etc/prometheus/{PROMETHEUS_RULES}:ro" in mounts
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert "BroadcasterRedisDown" in deploy_file(PROMETHEUS_RULES)
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "broadcaster.deploy.prometheus" in data["packages"], "in the wheel"
    assert data["package-data"]["broadcaster.deploy.prometheus"] == ["rules.yml"]


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
    assert "COPY deploy" in dockerfile, "the package carries deploy/ (broadcaster.deploy)"
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
    assert prometheus["rule_files"] == [PROMETHEUS_RULES]


def test_the_wheel_lists_every_subpackage() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        "broadcaster" + ".".join(("", *init.parent.relative_to(ROOT / "broadcaster").parts))
        for init in (ROOT / "broadcaster").rglob("__init__.py")
    }
    assert found - listed == set(), "add them to [tool.setuptools] packages"


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_ha_profile_runs_two_replicas_and_three_sentinels_on_the_password() -> None:
    url = "redis+sentinel://:0123abcd@sentinel1:26379,sentinel2:26379,sentinel3:26379/primary"
    env = {"REDIS_PASSWORD": PASSWORD, "BROADCASTER_REDIS_URL": url}
    services = compose({**env, "REDIS_MIN_REPLICAS_TO_WRITE": "1"})["services"]
    for name in ("redis", "redis-replica", "redis-replica2"):
        command = services[name]["command"]
        assert option(command, "--masterauth") == PASSWORD
        # Any of them may be promoted: each refuses writes with no replica in reach.
        assert option(command, "--min-replicas-to-write") == "1"
        assert int(option(command, "--min-replicas-max-lag")) < 10  # the jump window
    for name in ("redis-replica", "redis-replica2"):
        replica = services[name]["command"]
        assert replica[replica.index("--replicaof") + 1 : replica.index("--replicaof") + 3] == [
            "redis",
            "6379",
        ]
    assert services["redis-replica"]["volumes"] != services["redis-replica2"]["volumes"]
    # Without the profile, the lone primary takes writes with no replica.
    assert option(compose(env)["services"]["redis"]["command"], "--min-replicas-to-write") == "0"
    for name in ("sentinel1", "sentinel2", "sentinel3"):
        script = services[name]["command"][-1]
        assert "sentinel monitor primary redis 6379 2" in script
        assert "sentinel parallel-syncs primary 2" in script  # both replicas follow at once
        assert "sentinel auth-pass primary %s" in script and '"$REDIS_PASSWORD"' in script
        assert services[name]["environment"]["REDIS_PASSWORD"] == PASSWORD
    node = services["node1"]["environment"]
    assert node["BROADCASTER_REDIS_URL"] == url
    assert Settings(redis_url=node["BROADCASTER_REDIS_URL"]).redis_url == url


def test_the_cluster_profile_runs_six_cluster_servers_that_answer_by_name() -> None:
    services = compose()["services"]
    volumes = set()
    for name in CLUSTER_SERVERS:
        server = services[name]
        assert server["image"] == "redis:7"
        assert server["hostname"] == name
        script = server["command"][-1]
        assert server["command"][:2] == ["sh", "-c"] and script.startswith("exec redis-server ")
        for option in (
            "--cluster-enabled yes",
            "--appendonly yes",
            '--requirepass "$REDIS_PASSWORD"',
            '--masterauth "$REDIS_PASSWORD"',  # a replica, or a primary back as one
            # Redis 7: its service name in MOVED replies and the slot map, not its address.
            '--cluster-announce-hostname "$(hostname)"',
            "--cluster-preferred-endpoint-type hostname",
        ):
            assert option in script, (name, option)
        # The cluster promotes a replica by itself; the promoted one, replica-less, must
        # still take writes.
        assert "min-replicas" not in script
        assert server["environment"] == {"REDIS_PASSWORD": PASSWORD, "REDISCLI_AUTH": PASSWORD}
        assert "ports" not in server
        assert "redis-cli" in server["healthcheck"]["test"]
        volumes.add(server["volumes"][0].split(":")[0])
    assert len(volumes) == 6 and volumes <= set(compose()["volumes"])


def test_the_cluster_is_made_once_by_redis_cli_before_the_nodes_start() -> None:
    services = compose()["services"]
    create = services["redis-cluster-create"]
    assert create["image"] == "redis:7" and create["restart"] == "no"
    assert create["depends_on"] == {
        name: {"condition": "service_healthy"} for name in CLUSTER_SERVERS
    }
    assert create["environment"] == {"REDISCLI_AUTH": PASSWORD}
    script = create["command"][-1]
    # A cluster made already (its servers know each other) is left alone.
    skip, _, make = script.partition("; fi;")
    assert "cluster_known_nodes:[2-9]" in skip and "exit 0" in skip
    words = make.split()
    assert words[:4] == ["exec", "redis-cli", "--cluster", "create"]
    addresses = [f"{fixed_address(services[name])}:6379" for name in CLUSTER_SERVERS]
    assert words[4:] == [*addresses, "--cluster-replicas", "1", "--cluster-yes"]
    for name in ("node1", "node2", "node3", "demo"):
        waits = services[name]["depends_on"]["redis-cluster-create"]
        # Without the profile the job is not there, and nothing waits for it.
        assert waits == {"condition": "service_completed_successfully", "required": False}


def test_the_cluster_profile_says_which_url_to_set_and_the_nodes_take_it() -> None:
    assert f"BROADCASTER_REDIS_URL={CLUSTER_URL}" in (ROOT / "docker-compose.yml").read_text()
    assert (
        f"echo 'BROADCASTER_REDIS_URL={CLUSTER_URL}' >> .env"
        in (ROOT / "docs" / "cluster.md").read_text()
    )
    url = interpolate(CLUSTER_URL, {"REDIS_PASSWORD": PASSWORD})
    services = compose({"REDIS_PASSWORD": PASSWORD, "BROADCASTER_REDIS_URL": url})["services"]
    for name in ("node1", "node2", "node3", "demo"):
        assert services[name]["environment"]["BROADCASTER_REDIS_URL"] == url
    parsed = ClusterURL.parse(url)
    assert parsed.seeds == [(name, 6379) for name in CLUSTER_SERVERS]
    assert parsed.password == PASSWORD


def test_the_grafana_profile_shows_the_dashboard_read_only_on_loopback() -> None:
    grafana = compose()["services"]["grafana"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"]), "pin a version"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert grafana["networks"] == ["backend"]
    assert grafana["depends_on"] == ["prometheus"]
    assert "/api/health" in " ".join(grafana["healthcheck"]["test"])
    env = grafana["environment"]
    # Viewers without a login; no admin user, so no default password anywhere.
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_SECURITY_DISABLE_INITIAL_ADMIN_CREATION"] == "true"
    assert env["GF_AUTH_DISABLE_LOGIN_FORM"] == "true" and env["GF_AUTH_BASIC_ENABLED"] == "false"
    assert not any("PASSWORD" in name for name in env)
    mounts = {}
    for volume in grafana["volumes"]:
        source, target, mode = volume.split(":")
        assert mode == "ro", volume
        assert (ROOT / source).exists(), source
        mounts[target] = ROOT / source
    provisioning = Path("/etc/grafana/provisioning")
    datasource = yaml.safe_load(
        (mounts[str(provisioning / "datasources")] / "prometheus.yml").read_text()
    )["datasources"][0]
    prometheus = compose()["services"]["prometheus"]
    port = prometheus["ports"][0].rsplit(":", 1)[1]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == f"http://prometheus:{port}"
    scrape = yaml.safe_load(deploy_file("prometheus.yml"))["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == scrape
    provider = yaml.safe_load(
        (mounts[str(provisioning / "dashboards")] / "broadcaster.yml").read_text()
    )["providers"][0]
    folder = provider["options"]["path"]
    assert (mounts[folder] / "broadcaster.json").is_file(), "the provider's folder holds it"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{folder}/broadcaster.json"
    assert provider["allowUiUpdates"] is False
