"""The deployment artifacts in deploy/: the Kubernetes manifests against the Kubernetes
schemas (kubernetes-validate, offline) and against each other; the Prometheus alert rules
through their promtool unit tests (Debian: prometheus); and every metric a rule or a
Grafana panel uses, against what a live srm serve, srm reaper and srm events export."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from srm.config import load
from tests.helpers import token
from tests.processes import kill_group, srm_env, srm_serve, start_srm
from tests.redis_servers import RedisProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "srm.json"
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests are checked against
CUSTOM_KINDS = {"ServiceMonitor"}  # CRDs: no schema in kubernetes-validate
SECRET_TEMPLATE = "secret.template.yaml"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe").load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load((KUBE / "kustomization.yaml").read_text())
    return data


@pytest.fixture(scope="module")
def resources(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """What `kubectl apply -k` applies: the listed files and the generated ConfigMaps."""
    found = [doc for name in kustomization["resources"] for doc in documents(KUBE / name)]
    for generator in kustomization["configMapGenerator"]:
        data = {Path(f).name: (KUBE / f).read_text() for f in generator["files"]}
        found.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    return found


def of_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def test_every_file_is_in_the_kustomization_or_the_secret_template(
    kustomization: dict[str, Any],
) -> None:
    listed = set(kustomization["resources"]) | {
        f for g in kustomization["configMapGenerator"] for f in g["files"]
    }
    present = {p.name for p in KUBE.iterdir()} - {"kustomization.yaml", SECRET_TEMPLATE}
    assert present == listed


def test_every_manifest_is_valid_against_the_kubernetes_schemas(
    resources: list[dict[str, Any]],
) -> None:
    secret = documents(KUBE / SECRET_TEMPLATE)
    checked = 0
    for resource in [*resources, *secret]:
        if resource["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{resource['kind']} {resource['metadata']['name']}: {exc.message}")
        checked += 1
    assert checked >= 10


def test_the_deployments_are_the_api_the_reaper_and_the_events_consumer(
    resources: list[dict[str, Any]],
) -> None:
    deployments = of_kind(resources, "Deployment")
    assert set(deployments) == {"srm-api", "srm-reaper", "srm-events"}
    commands = {
        name: d["spec"]["template"]["spec"]["containers"][0]["args"]
        for name, d in deployments.items()
    }
    assert commands["srm-api"] == ["srm", "serve"]
    assert commands["srm-reaper"] == ["srm", "reaper"]
    assert commands["srm-events"][:2] == ["srm", "events"]
    assert deployments["srm-reaper"]["spec"]["replicas"] == 2  # safe: docs/reaper.md
    api = deployments["srm-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["resources"]["requests"]["cpu"]
    reaper = deployments["srm-reaper"]["spec"]["template"]["spec"]["containers"][0]
    assert reaper["livenessProbe"]["exec"]["command"] == ["srm", "reaper", "--check"]
    for d in deployments.values():
        spec = d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        container = spec["containers"][0]
        assert {"secretRef": {"name": "srm-secrets"}} in container["envFrom"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["config"]["configMap"]["name"] in of_kind(resources, "ConfigMap")


def test_services_pdb_hpa_and_servicemonitor_point_at_what_exists(
    resources: list[dict[str, Any]],
) -> None:
    deployments = of_kind(resources, "Deployment")

    def pods(selector: dict[str, str]) -> list[str]:
        return [
            name
            for name, d in deployments.items()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]

    port_names = set()
    for name, service in of_kind(resources, "Service").items():
        targets = pods(service["spec"]["selector"])
        assert len(targets) == 1, name
        container = deployments[targets[0]]["spec"]["template"]["spec"]["containers"][0]
        named = {p["name"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named, (name, port)
            port_names.add(port["name"])
    pdb = of_kind(resources, "PodDisruptionBudget")["srm-api"]
    assert pods(pdb["spec"]["selector"]["matchLabels"]) == ["srm-api"]
    hpa = of_kind(resources, "HorizontalPodAutoscaler")["srm-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    monitor = of_kind(resources, "ServiceMonitor")["srm"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = of_kind(resources, "Service").values()
    assert all(selector.items() <= s["metadata"]["labels"].items() for s in services)
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == port_names


def test_the_configmap_is_a_valid_srm_configuration(tmp_path: Path) -> None:
    settings = load(env={"SRM_CONFIG": str(KUBE / "srm.toml")})
    assert settings.server.host == "0.0.0.0"  # noqa: S104 - inside a pod
    assert settings.reaper.metrics_port == 9101
    assert settings.events.metrics_port == 9102
    tomllib.loads((KUBE / "srm.toml").read_text())


def test_the_secret_template_names_what_the_containers_need() -> None:
    (secret,) = documents(KUBE / SECRET_TEMPLATE)
    assert secret["metadata"]["name"] == "srm-secrets"
    assert set(secret["stringData"]) == {"SRM_AUTH_SECRET", "SRM_OPERATOR_KEYS", "SRM_REDIS_URL"}


# --- Prometheus ---------------------------------------------------------------------------


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is needed (Debian: apt-get install prometheus)")
    return found


def test_the_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    tool = promtool()
    for args in (["check", "rules", ALERTS.name], ["test", "rules", ALERT_TESTS.name]):
        result = subprocess.run(
            [tool, *args], cwd=ALERTS.parent, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = {
        rule["alert"]
        for group in YAML(typ="safe").load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    }
    tested = {
        case["alertname"]
        for test in YAML(typ="safe").load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert alerts == tested


_METRIC = re.compile(r"\bsrm_[a-z0-9_]+")


def used_metrics() -> dict[str, set[str]]:
    """Every srm_* name in an alert expression or a dashboard query, by where."""
    used: dict[str, set[str]] = {}
    for group in YAML(typ="safe").load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            for name in _METRIC.findall(rule["expr"]):
                used.setdefault(name, set()).add(f"alert {rule['alert']}")
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in _METRIC.findall(target["expr"]):
                used.setdefault(name, set()).add(f"panel {panel['title']!r}")
    return used


def exported(text: str) -> set[str]:
    """The sample names a /metrics page declares (from its TYPE lines, so a labelled metric
    counts before its first sample)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
    return names


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return str(answer.read().decode())


def scrape_when_up(port: int, proc: subprocess.Popen[bytes], log: Path) -> str:
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            return scrape(port)
        time.sleep(0.1)
    raise AssertionError(f"no metrics on port {port}:\n{log.read_text()}")


@contextlib.contextmanager
def sidecar(tmp: Path, command: str, url: str, port_variable: str) -> Iterator[str]:
    port = free_port()
    env = srm_env(SRM_REDIS_URL=url, SRM_REDIS_SHARDS="16", **{port_variable: str(port)})
    log = tmp / f"{command}.log"
    proc = start_srm([command], env, log)
    try:
        yield scrape_when_up(port, proc, log)
    finally:
        proc.terminate()
        kill_group(proc)


@pytest.mark.slow
def test_every_metric_of_the_rules_and_the_dashboard_exists(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    url = redis_server.url
    with srm_serve(tmp_path, SRM_REDIS_URL=url, SRM_REDIS_SHARDS="16") as api:
        # a setup, so the route label the dashboard matches is on the page
        request = urllib.request.Request(  # noqa: S310 - 127.0.0.1
            api.base + "/srm/sessions",
            data=b'{"content": {"contentID": "x", "contentType": "COD"}}',
            headers={"Client-Token": token("acct-deploy", "tv-1")},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            assert answer.status == 200
        api_page = scrape(api.port)
    with sidecar(tmp_path, "reaper", url, "SRM_REAPER_METRICS_PORT") as reaper_page:
        pass
    with sidecar(tmp_path, "events", url, "SRM_EVENTS_METRICS_PORT") as events_page:
        pass
    names = exported(api_page) | exported(reaper_page) | exported(events_page)
    missing = {name: where for name, where in used_metrics().items() if name not in names}
    assert not missing, f"not exported by srm serve, srm reaper or srm events: {missing}"
    assert re.search(r'srm_http_requests_total\{[^}]*route="/srm(/v1)?/sessions"', api_page)
