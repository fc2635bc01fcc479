"""The dashboard: totals, what runs now (with progress, rate, ETA, stalls), what starts next, provider health.

Everything here reads counters and a few indexed rows; nothing counts messages, so a dashboard open in
many tabs costs the sender nothing measurable.
"""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from mailer import keys
from mailer.admin.pages import common
from mailer.admin.pages.progress import progress
from mailer.domain.breaker import BreakerState
from mailer.domain.clock import utc_now
from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.observability.metrics import NAMESPACE
from mailer.store import mailout_overview as overview
from mailer.store import stats as stats_store
from mailer.store.tables import customers

# Rows of "running now" and "starting next": more would not fit an operator's glance.
MAX_RUNNING_SHOWN = 20
MAX_SCHEDULED_SHOWN = 10
BREAKER_WORDS = {
    BreakerState.CLOSED: "closed: requests to the provider flow",
    BreakerState.OPEN: "open: the provider kept failing; requests wait for the cool-down",
    BreakerState.HALF_OPEN: "half open: one probe request decides whether sending resumes",
}


def breaker_state() -> BreakerState | None:
    """This process's circuit breaker, as its gauge shows it (the breaker is per process, like the gauge)."""
    name = f"{NAMESPACE}_provider_breaker_state"
    for state in BreakerState:
        if REGISTRY.get_sample_value(name, {"state": state.value}) == 1:
            return state
    return None


async def _live_context(request: web.Request) -> dict[str, Any]:
    read_db = common.read_db(request)
    now = utc_now()
    active = await overview.list_in_status(
        read_db, [MailoutStatus.RUNNING, MailoutStatus.PAUSED], MAX_RUNNING_SHOWN
    )
    scheduled = await overview.list_in_status(read_db, [MailoutStatus.SCHEDULED], MAX_SCHEDULED_SHOWN)
    due = await overview.with_due_work(read_db, [m.id for m in active], now)
    running = []
    for mailout in active:
        data = await stats_store.for_mailout(read_db, mailout.id)
        running.append(
            progress(
                data.counts.mailout,
                data.counts.by_status,
                data.first_sent_at,
                data.last_sent_at,
                mailout.id in due,
                now,
            )
        )
    ready, health = await request.config_dict[keys.HEALTH].report()
    return {
        "running": running,
        "scheduled": scheduled,
        "now": now,
        "ready": ready,
        "health": health,
        "breaker": breaker_state(),
        "breaker_words": BREAKER_WORDS,
        # Refreshing is worth it only while something sends or is about to start.
        "live": any(p.mailout.status is MailoutStatus.RUNNING for p in running) or bool(scheduled),
    }


async def _totals(request: web.Request) -> dict[str, Any]:
    read_db = common.read_db(request)
    by_status = await overview.count_by_status(read_db)
    async with read_db.connect() as conn:
        customer_count = await conn.scalar(select(func.count()).select_from(customers))
        # Today's mailouts: those that were running at some point today. Their counters give sent and
        # failed without touching a message row.
        today = utc_now().replace(hour=0, minute=0, second=0, microsecond=0)
        ids = await overview.active_since(conn, today)
        counts = await stats_store.counts_by_status(conn, ids)
    return {
        "customer_count": customer_count or 0,
        "mailouts_by_status": by_status,
        "sent_today": sum(c[MessageStatus.SENT] for c in counts.values()),
        "failed_today": sum(c[MessageStatus.FAILED] for c in counts.values()),
        "today_mailouts": len(ids),
    }


async def page(request: web.Request) -> web.Response:
    context = await _live_context(request) | await _totals(request)
    return aiohttp_jinja2.render_template("dashboard.html", request, context)


async def live(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("_dashboard_live.html", request, await _live_context(request))
