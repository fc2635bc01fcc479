"""POST /send/{msgId}: the provider's send API, with the faults drawn for each valid request."""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mailer.domain.customers import PHONE_INT_MAX, PHONE_INT_MIN
from sandbox.faults import Fault
from sandbox.state import SANDBOX_STATE, SandboxState
from sandbox.wire import JSON, error, parse_int64

THROTTLE_RETRY_AFTER_S = 1
ERROR_STATUSES = (500, 502, 503)
_OK_BODY = b'{"code": 0, "message": "OK"}'


class SendBody(BaseModel):
    """The request body; strict, so that JSON true is not the integer 1 and 7.9e10 is not a phone."""

    model_config = ConfigDict(strict=True, frozen=True)

    id: int
    # The provider takes the phone as a JSON integer: the same range as a customer's phone given as one.
    phone: int = Field(ge=PHONE_INT_MIN, le=PHONE_INT_MAX)
    text: str


async def handle_send(request: web.Request) -> web.Response:
    state = request.app[SANDBOX_STATE]
    state.requests += 1
    response = await _answer(state, request)
    state.record_status(response.status)
    return response


async def _answer(state: SandboxState, request: web.Request) -> web.Response:
    if not state.authorized(request.headers.get(hdrs.AUTHORIZATION)):
        response = error(401, "missing or invalid bearer token")
        response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
        return response
    try:
        raw_body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(413, "body too large")
    parsed = parse_send(request.match_info["msgId"], raw_body)
    if isinstance(parsed, str):
        return error(400, parsed)
    # Decided before anything is counted: a faulty answer means the provider did not take the message.
    fault = state.draw_fault()
    delay_s = state.draw_latency_s()
    if fault is Fault.HANG:
        state.hung += 1
        await state.released.wait()
        return error(503, "sandbox shutting down")
    if delay_s:
        await asyncio.sleep(delay_s)
    match fault:
        case Fault.ERROR:
            return error(state.rng.choice(ERROR_STATUSES), "injected server error")
        case Fault.THROTTLE:
            response = error(429, "too many requests")
            response.headers[hdrs.RETRY_AFTER] = str(THROTTLE_RETRY_AFTER_S)
            return response
        case Fault.REJECT:
            return error(400, "injected rejection")
        case Fault.GARBAGE:
            body, content_type = state.next_garbage()
            return web.Response(body=body, content_type=content_type)
    state.accept(parsed.id, parsed.phone, parsed.text)
    return web.Response(body=_OK_BODY, content_type=JSON)


def parse_send(raw_id: str, raw_body: bytes) -> SendBody | str:
    """The body of a valid request, else the reason it is not."""
    msg_id = parse_int64(raw_id)
    if msg_id is None:
        return "msgId must be an int64"
    try:
        body = SendBody.model_validate_json(raw_body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return f"{where}: {first['msg']}"
    if body.id != msg_id:
        return "id must equal msgId"
    return body
