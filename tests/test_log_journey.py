"""A full mailout through the real engine and a sandbox provider, read back from the JSON log lines.

"What happened to message 4711?" must be answered by the lines that carry `message_id=4711`, in order: at
INFO its creation and one line per attempt with its outcome (the state the engine wrote); at DEBUG also the
claim, the provider request and the provider response. "What happened to customer 381?" by the lines that
carry `customer_id=381`: every one of those lines names the customer. And no line of a whole mailout and a
login may hold a token, a password or an Authorization header.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mailer.settings import Settings
from tests.conftest import ADMIN_PASSWORD, JWT_SECRET, AiohttpClient
from tests.engine_support import FAST_ENGINE, SANDBOX_TOKEN, Service, start_sandbox, start_service
from tests.log_support import CapturedLogs, captured_logs
from tests.polling import eventually

CUSTOMERS = 3
# The journey of one message, as event names; other lines may come in between.
JOURNEY = ("message.created", "message.sent")
DEBUG_JOURNEY = (
    "message.created",
    "message.claimed",
    "provider.request",
    "provider.response",
    "message.sent",
)


async def run_mailout(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings], log_level: str = "INFO"
) -> tuple[CapturedLogs, Service, int, list[Any]]:
    sandbox = await start_sandbox()
    settings = settings_factory(provider_url=sandbox.url, log_level=log_level, **FAST_ENGINE)
    try:
        with captured_logs(settings) as logs:
            service = await start_service(aiohttp_client, settings)
            await service.customers(CUSTOMERS)
            mailout = await service.mailout()

            async def all_sent() -> bool:
                return (await service.statuses(mailout["id"])).get("sent") == CUSTOMERS

            await eventually(all_sent, what="every message sent")
            rows = await service.messages(mailout["id"])
            # Closing stops the engine, which writes (and logs) its last outcomes before the capture ends.
            await service.api.client.close()
    finally:
        await sandbox.server.close()
    return logs, service, int(mailout["id"]), rows


def in_order(events: list[str], wanted: tuple[str, ...]) -> None:
    position = 0
    for name in wanted:
        assert name in events[position:], f"{name!r} missing after {events[:position]} in {events}"
        position = events.index(name, position) + 1


async def test_one_message_tells_its_journey_in_order(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    logs, _service, mailout_id, rows = await run_mailout(aiohttp_client, settings_factory)
    message = rows[0]
    lines = [line for line in logs.lines if line.get("message_id") == message.id]
    events = [line["event"] for line in lines]
    in_order(events, JOURNEY)
    # Short: nothing at INFO but the creation and one line per attempt (one attempt here).
    assert events == list(JOURNEY)
    by_event = {line["event"]: line for line in lines}
    for name in JOURNEY:
        assert by_event[name]["mailout_id"] == mailout_id, name
        assert by_event[name]["customer_id"] == message.customer_id, name
    sent = by_event["message.sent"]
    assert sent["attempts"] == 1
    assert sent["outcome"] == "sent"
    assert sent["http_status"] == 200
    assert isinstance(sent["duration_ms"], float)
    # The API call that created the mailout is in the same log, found by the mailout id.
    assert any(line.get("route") == "/api/mailouts/" and line.get("status") == 201 for line in logs.lines)


async def test_at_debug_the_claim_and_each_request_and_response_are_there_too(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    logs, _service, mailout_id, rows = await run_mailout(aiohttp_client, settings_factory, "DEBUG")
    message = rows[0]
    lines = [line for line in logs.lines if line.get("message_id") == message.id]
    in_order([line["event"] for line in lines], DEBUG_JOURNEY)
    by_event = {line["event"]: line for line in lines}
    for name in DEBUG_JOURNEY:
        assert by_event[name]["mailout_id"] == mailout_id, name
        assert by_event[name]["customer_id"] == message.customer_id, name
    request = by_event["provider.request"]
    assert request["method"] == "POST"
    assert request["url"].endswith(f"/send/{message.id}")
    assert request["attempt"] == 1
    assert "deadline" in request
    response = by_event["provider.response"]
    assert response["http_status"] == 200
    assert response["outcome"] == "sent"


async def test_a_customer_s_story_is_found_by_its_id(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    logs, _service, _mailout_id, rows = await run_mailout(aiohttp_client, settings_factory)
    customer_id = rows[1].customer_id
    story = [line for line in logs.lines if line.get("customer_id") == customer_id]
    message_lines = [line for line in logs.lines if line.get("message_id") == rows[1].id]
    # Every line about the customer's message names the customer, so the customer's story holds them all.
    assert message_lines
    assert all(line in story for line in message_lines)
    in_order([line["event"] for line in story], JOURNEY)


async def test_a_full_mailout_and_a_login_log_no_secret(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    logs, service, _mailout_id, _rows = await run_mailout(aiohttp_client, settings_factory)
    access_token = service.api.headers["Authorization"].removeprefix("Bearer ")
    text = logs.text
    assert text.count("\n") > CUSTOMERS, "the capture holds the service's lines"
    assert '"login"' in text
    for secret in (SANDBOX_TOKEN, ADMIN_PASSWORD, JWT_SECRET, access_token):
        assert secret not in text, f"a secret leaked into the logs: {secret[:4]}…"
    assert "Authorization" not in text or '"Authorization":"[redacted]"' in text
