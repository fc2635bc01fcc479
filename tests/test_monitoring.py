"""deploy/monitoring: alert rules that promtool accepts and whose unit tests pass, scrape configs that fit
the deployments, and a Grafana dashboard that asks only for metrics /metrics really exports."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from tests.test_deploy import ROOT, assert_ok, compose, require_tool, run_tool

MONITORING = ROOT / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "mailer.json"
PROVISIONING = MONITORING / "grafana" / "provisioning"
DEPLOYMENT = ROOT / "deploy" / "k8s" / "base" / "deployment.yaml"
# Prometheus' own series that a rule may use besides the service's.
PROMETHEUS_SERIES = frozenset({"up"})
METRIC_NAME = re.compile(r"\b(mailer_[a-z0-9_]+|up)\b")
# What an operator looks at first; the dashboard must show each (the list).
DASHBOARD_MUST_SHOW = (
    "mailer_provider_requests_total",
    "mailer_message_transitions_total",
    "mailer_provider_request_duration_seconds_bucket",
    "mailer_provider_breaker_state",
    "mailer_http_request_duration_seconds_bucket",
    "mailer_db_pool_connections_in_use",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return run_tool([require_tool("promtool"), *args])


def test_the_alert_rules_pass_promtool_check() -> None:
    assert_ok(promtool("check", "rules", str(ALERTS)))


def test_the_alert_rules_pass_their_unit_tests() -> None:
    assert_ok(promtool("test", "rules", str(MONITORING / "alerts_test.yml")))


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())
    firing = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert alerts == firing, f"no test that fires: {alerts - firing}"


def test_the_compose_prometheus_config_passes_promtool() -> None:
    assert_ok(promtool("check", "config", str(MONITORING / "prometheus.yml")))


def test_the_kubernetes_prometheus_config_passes_promtool() -> None:
    result = promtool("check", "config", str(MONITORING / "prometheus-kubernetes.yml"))
    if "kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian builds promtool without Kubernetes discovery; the GitLab `monitoring` job checks this
        # file with the upstream promtool.
        pytest.skip("this promtool has no Kubernetes service discovery (Debian's build)")
    assert_ok(result)


def test_the_kubernetes_scrape_config_finds_the_deployment_pods() -> None:
    """The relabelling, applied as Prometheus would to a pod of deploy/k8s, keeps it and scrapes the port
    and path that its annotations give."""
    config = yaml.safe_load((MONITORING / "prometheus-kubernetes.yml").read_text())
    (job,) = config["scrape_configs"]
    annotations = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["metadata"]["annotations"]
    target = {
        "__address__": "10.1.2.3",
        "__metrics_path__": "/wrong",
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": annotations["prometheus.io/scrape"],
        "__meta_kubernetes_pod_annotation_prometheus_io_port": annotations["prometheus.io/port"],
        "__meta_kubernetes_pod_annotation_prometheus_io_path": annotations["prometheus.io/path"],
        "__meta_kubernetes_namespace": "mailer",
        "__meta_kubernetes_pod_name": "mailer-abc",
    }
    for rule in job["relabel_configs"]:
        value = ";".join(target.get(label, "") for label in rule["source_labels"])
        # Prometheus anchors every relabel regex; $1 is \1 in Python.
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep":
            assert match, f"the pod is dropped by {rule}"
        elif match:
            target[rule["target_label"]] = match.expand(rule.get("replacement", "$1").replace("$", "\\"))
    assert target["__address__"] == f"10.1.2.3:{annotations['prometheus.io/port']}"
    assert target["__metrics_path__"] == "/metrics"
    assert job["job_name"] == "mailer"


def test_the_compose_prometheus_scrapes_the_mailer_service() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    services = compose()["services"]
    assert sd["names"] == ["mailer"]
    assert "mailer" in services
    assert sd["port"] == int(services["mailer"]["environment"].get("MAILER_PORT", 8080))
    mounts = services["prometheus"]["volumes"]
    assert "./deploy/monitoring/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    assert config["rule_files"] == ["alerts.yml"]


def test_grafana_is_provisioned_from_the_compose_mounts() -> None:
    services = compose()["services"]
    (datasource,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in services
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "mailer.yml").read_text())["providers"]
    mounted = {volume.split(":")[1] for volume in services["grafana"]["volumes"]}
    assert provider["options"]["path"] in mounted


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        exprs += [target["expr"] for target in panel["targets"]]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    return exprs


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def exported_series_names(exposition: str) -> set[str]:
    """Every sample name of a Prometheus text page (histograms give _bucket, _sum and _count)."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


async def test_the_dashboard_and_the_alerts_use_only_exported_metrics(client: TestClient[Any, Any]) -> None:
    # One request first, so that the labelled HTTP series exist.
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/metrics")
    assert resp.status == 200
    exported = exported_series_names(await resp.text()) | PROMETHEUS_SERIES
    for source, exprs in (("dashboard", dashboard_exprs()), ("alerts.yml", alert_exprs())):
        used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
        assert used, source
        unknown = used - exported
        assert not unknown, f"{source} asks for metrics /metrics does not export: {sorted(unknown)}"
    shown = {name for expr in dashboard_exprs() for name in METRIC_NAME.findall(expr)}
    missing = set(DASHBOARD_MUST_SHOW) - shown
    assert not missing, f"the dashboard does not show {missing}"


def test_metric_name_matching_sees_histogram_series() -> None:
    # The check above compares sample names; a typo such as a missing _bucket must count as unknown.
    page = '# TYPE mailer_x_seconds histogram\nmailer_x_seconds_bucket{le="1"} 0\nmailer_x_seconds_count 0\n'
    assert exported_series_names(page) == {"mailer_x_seconds_bucket", "mailer_x_seconds_count"}
