"""/metrics: Prometheus text that promtool accepts, route templates as labels, scrape-time gauges, docs."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from mailer.app import create_app
from mailer.domain.breaker import BreakerState
from mailer.observability import metrics
from mailer.settings import Settings
from tests.conftest import IN_CI

DOCS = Path(__file__).parent.parent / "docs" / "metrics.md"
AiohttpClient = Callable[[web.Application], Any]


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def our_metric_names() -> set[str]:
    """Every metric family this service defines (not the process/platform/gc collectors)."""
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("mailer_"):
            suffix = "_total" if family.type == "counter" else ""
            names.add(family.name + suffix)
    return names


async def test_metrics_pass_promtool(api: Any) -> None:
    # Some traffic first, so that labelled series exist.
    await api.get("/api/customers/")
    await api.get("/api/customers/123")
    resp = await api.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    body = await resp.text()
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("promtool is required in CI")
        pytest.skip("promtool is not installed")
    checked = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
    )
    async with asyncio.timeout(30):
        output, _ = await checked.communicate(body.encode())
    assert checked.returncode == 0, output.decode()


async def test_http_metrics_use_route_templates_not_ids(api: Any) -> None:
    labels = {"method": "GET", "route": "/api/customers/{id}", "status": "404"}
    before = sample("mailer_http_requests_total", labels)
    before_count = sample(
        "mailer_http_request_duration_seconds_count", {"method": "GET", "route": "/api/customers/{id}"}
    )
    assert (await api.get("/api/customers/424242")).status == 404
    assert sample("mailer_http_requests_total", labels) == before + 1
    assert (
        sample(
            "mailer_http_request_duration_seconds_count", {"method": "GET", "route": "/api/customers/{id}"}
        )
        == before_count + 1
    )
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    before_unmatched = sample("mailer_http_requests_total", unmatched)
    await api.client.get("/nowhere/4242")
    assert sample("mailer_http_requests_total", unmatched) == before_unmatched + 1
    body = await (await api.client.get("/metrics")).text()
    # Only label values matter: a sample's value (a sum of seconds, a byte count) may hold any digits.
    label_sets = re.findall(r"\{[^}]*\}", body)
    assert label_sets
    assert not [labels for labels in label_sets if "4242" in labels]
    # An invented method is not a new label value.
    await api.client.request("BREW", "/")
    assert 'method="BREW"' not in await (await api.client.get("/metrics")).text()


async def test_database_pool_is_sampled_while_the_app_runs(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    before = sample(metrics.DB_POOL_SIZE)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, with_engine=False))
    expected = 1 if settings.is_sqlite else 2 * settings.db_pool_size
    assert sample(metrics.DB_POOL_SIZE) == before + expected
    assert (await client.get("/readyz")).status == 200
    # The readiness check has returned its connection: nothing is checked out, and it waits in the pool.
    assert sample(metrics.DB_POOL_IN_USE) == 0
    assert sample(metrics.DB_POOL_IDLE) >= 1
    await client.close()
    assert sample(metrics.DB_POOL_SIZE) == before


def test_scrape_time_gauges_sum_sources_and_skip_broken_ones() -> None:
    before = sample(metrics.SENDER_QUEUE_DEPTH)
    unwatch_a = metrics.watch(metrics.SENDER_QUEUE_DEPTH, lambda: 3)
    unwatch_b = metrics.watch(metrics.SENDER_QUEUE_DEPTH, lambda: 4)

    def broken() -> float:
        raise RuntimeError("shutting down")

    unwatch_c = metrics.watch(metrics.SENDER_QUEUE_DEPTH, broken)
    assert sample(metrics.SENDER_QUEUE_DEPTH) == before + 7
    unwatch_a()
    unwatch_a()  # twice is harmless
    assert sample(metrics.SENDER_QUEUE_DEPTH) == before + 4
    unwatch_b()
    unwatch_c()
    assert sample(metrics.SENDER_QUEUE_DEPTH) == before
    with pytest.raises(KeyError):
        metrics.watch("mailer_no_such_gauge", lambda: 1)


def test_helpers_count_by_bounded_labels() -> None:
    sent_before = sample("mailer_message_transitions_total", {"status": "sent"})
    metrics.message_transition("sent", 5)
    metrics.message_transition("sent", 0)
    assert sample("mailer_message_transitions_total", {"status": "sent"}) == sent_before + 5
    with pytest.raises(ValueError, match="not a valid"):
        metrics.message_transition("delivered")

    timeouts_before = sample("mailer_provider_requests_total", {"outcome": "timeout"})
    latency_before = sample("mailer_provider_request_duration_seconds_count")
    metrics.provider_request("timeout", 10.0)
    metrics.provider_request("cut", None)  # a request cut before it started has no latency
    assert sample("mailer_provider_requests_total", {"outcome": "timeout"}) == timeouts_before + 1
    assert sample("mailer_provider_request_duration_seconds_count") == latency_before + 1

    metrics.set_breaker_state(BreakerState.OPEN)
    states = {s.value: sample("mailer_provider_breaker_state", {"state": s.value}) for s in BreakerState}
    assert states == {"closed": 0, "open": 1, "half_open": 0}
    metrics.set_breaker_state("closed")
    assert sample("mailer_provider_breaker_state", {"state": "closed"}) == 1


def test_known_label_values_exist_from_the_start() -> None:
    for status in ("pending", "sending", "sent", "failed", "expired", "cancelled"):
        assert REGISTRY.get_sample_value("mailer_message_transitions_total", {"status": status}) is not None
    assert (
        REGISTRY.get_sample_value("mailer_provider_requests_total", {"outcome": "unauthorized"}) is not None
    )


def test_every_metric_is_documented() -> None:
    documented = set(re.findall(r"`(mailer_[a-z_]+)`", DOCS.read_text()))
    missing = our_metric_names() - documented
    assert not missing, f"add to docs/metrics.md: {sorted(missing)}"
    stale = {
        name for name in documented if not name.endswith(("_bucket", "_count", "_sum"))
    } - our_metric_names()
    assert not stale, f"documented but not defined: {sorted(stale)}"


def test_no_metric_has_an_id_label() -> None:
    for family in REGISTRY.collect():
        if family.name.startswith("mailer_"):
            for s in family.samples:
                assert not any(label.endswith("id") for label in s.labels), (family.name, s.labels)


def test_the_documented_alert_rules_are_valid(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("promtool is required in CI")
        pytest.skip("promtool is not installed")
    match = re.search(r"```yaml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert match is not None
    rules = tmp_path / "rules.yml"
    rules.write_text(match.group(1))
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
