"""Cancel, delete, pause/resume and a refused provider token, end to end on both databases."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mailer.settings import Settings
from sandbox.faults import SandboxFaults
from tests.conftest import AiohttpClient
from tests.engine_support import FAST_ENGINE, Sandbox, Service, start_sandbox, start_service
from tests.polling import eventually

AUDIENCE = 60
CONCURRENCY = 4
# Long enough that a mailout of AUDIENCE messages over a few workers is still going when the test acts.
LATENCY_MS = 40.0
# Probes the refused-token test waits for: enough to see their spacing, few enough to take about a second.
PROBES = 3


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    box = await start_sandbox(SandboxFaults(latency_ms=LATENCY_MS, seed=3))
    yield box
    await box.server.close()


@pytest.fixture
async def service(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings], sandbox: Sandbox
) -> Service:
    settings = settings_factory(provider_url=sandbox.url, **{**FAST_ENGINE, "send_concurrency": CONCURRENCY})
    return await start_service(aiohttp_client, settings)


async def sent_at_least(service: Service, mailout_id: int, count: int) -> bool:
    return (await service.statuses(mailout_id)).get("sent", 0) >= count


async def settled(service: Service, mailout_id: int) -> dict[str, int] | None:
    statuses = await service.statuses(mailout_id)
    if statuses.get("pending") or statuses.get("sending"):
        return None
    return statuses


def pool_idle(service: Service, mailout_id: int) -> bool:
    """No job of the mailout queued or in flight in the pool: nothing of it can reach the provider any more
    unless an actor claims again (which needs the mailout running)."""
    pool = service.engine.pool
    return pool.in_flight(mailout_id) == 0 and pool.queue_depth() == 0


async def idle(service: Service, mailout_id: int) -> bool:
    return pool_idle(service, mailout_id)


async def test_cancel_stops_sending_at_once(service: Service, sandbox: Sandbox) -> None:
    await service.customers(AUDIENCE)
    mailout = await service.mailout()
    await eventually(lambda: sent_at_least(service, mailout["id"], 5), what="some sent")
    cancelled = await service.post(f"/api/mailouts/{mailout['id']}/cancel")
    requests_at_cancel = sandbox.state.requests
    assert cancelled["status"] == "cancelled"
    statuses = await eventually(lambda: settled(service, mailout["id"]), what="all final")
    assert sandbox.state.requests == requests_at_cancel
    assert statuses.get("cancelled", 0) > 0
    assert statuses.get("sent", 0) + statuses["cancelled"] == AUDIENCE
    await eventually(lambda: idle(service, mailout["id"]), what="nothing of the mailout in the pool")
    assert sandbox.state.requests == requests_at_cancel
    assert len(await service.attempts(mailout["id"])) == requests_at_cancel


async def test_delete_stops_sending_and_removes_everything(service: Service, sandbox: Sandbox) -> None:
    await service.customers(AUDIENCE)
    mailout = await service.mailout()
    await eventually(lambda: sent_at_least(service, mailout["id"], 5), what="some sent")
    resp = await service.api.delete(f"/api/mailouts/{mailout['id']}")
    assert resp.status == 204
    requests_at_delete = sandbox.state.requests
    assert await service.messages(mailout["id"]) == []
    await eventually(lambda: idle(service, mailout["id"]), what="nothing of the mailout in the pool")
    assert sandbox.state.requests == requests_at_delete
    ready = await (await service.api.get("/readyz")).json()
    assert ready["checks"]["engine"] == "ok"


async def test_pause_stops_new_sends_and_resume_goes_on(service: Service, sandbox: Sandbox) -> None:
    await service.customers(AUDIENCE)
    mailout = await service.mailout()
    await eventually(lambda: sent_at_least(service, mailout["id"], 5), what="some sent")
    paused = await service.post(f"/api/mailouts/{mailout['id']}/pause")
    assert paused["status"] == "paused"

    async def nothing_in_flight() -> bool:
        return pool_idle(service, mailout["id"]) and not (await service.statuses(mailout["id"])).get(
            "sending"
        )

    await eventually(nothing_in_flight, what="in-flight requests finished")
    # Every request that went out is recorded, none is queued or in flight, and the mailout is paused (claims
    # take running mailouts only): nothing more can go until the resume.
    requests_paused = sandbox.state.requests
    assert len(await service.attempts(mailout["id"])) == requests_paused
    assert (await service.get(f"/api/mailouts/{mailout['id']}"))["status"] == "paused"
    statuses = await service.statuses(mailout["id"])
    assert statuses.get("pending", 0) > 0
    assert sandbox.state.requests == requests_paused

    resumed = await service.post(f"/api/mailouts/{mailout['id']}/resume")
    assert resumed["status"] == "running"
    await eventually(lambda: sent_at_least(service, mailout["id"], AUDIENCE), what="all sent after resume")
    rows = await service.messages(mailout["id"])
    assert sandbox.counts() == {row.id: 1 for row in rows}


async def test_refused_token_raises_an_alarm_and_recovers(service: Service, sandbox: Sandbox) -> None:
    sandbox.deny["on"] = True
    await service.customers(10)
    mailout = await service.mailout()

    async def alarm() -> dict[str, Any] | None:
        body: dict[str, Any] = await (await service.api.get("/readyz")).json()
        return body if "alarm:provider_auth" in body["checks"] else None

    await eventually(alarm, what="provider_auth alarm")

    # At most CONCURRENCY requests were in flight when the first 401 came; every later attempt is a probe.
    async def probed() -> list[Any] | None:
        attempts = await service.attempts(mailout["id"])
        return attempts if len(attempts) >= CONCURRENCY + PROBES else None

    attempts = sorted(await eventually(probed, what=f"{PROBES} probes"), key=lambda a: a.started_at)
    # Probes go out now and then while the token is refused; nothing fails, nothing is sent.
    statuses = await service.statuses(mailout["id"])
    assert statuses.get("failed", 0) == 0
    assert statuses.get("sent", 0) == 0
    assert {a.outcome for a in attempts} == {"unauthorized"}
    # One probe per interval, each after the previous one's refusal: no hammering.
    interval_s = FAST_ENGINE["breaker_cooldown_s"]
    probe_starts = [a.started_at for a in attempts[CONCURRENCY - 1 :]]
    gaps_s = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(probe_starts)]
    assert min(gaps_s) >= interval_s, f"probes closer than {interval_s} s apart: {gaps_s}"

    sandbox.deny["on"] = False
    await eventually(lambda: sent_at_least(service, mailout["id"], 10), what="all sent after the fix")

    async def alarm_cleared() -> bool:
        return await alarm() is None

    await eventually(alarm_cleared, what="alarm cleared")
