"""The base of every API view: aiohttp-pydantic validation, with errors in the contract's shape."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import orjson
from aiohttp import web
from aiohttp_pydantic import PydanticView
from multidict import MultiDictProxy
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer import keys
from mailer.api.problems import problem
from mailer.observability.truncate import clip
from mailer.operations.ports import EnginePort
from mailer.schemas.common import INT64_MAX
from mailer.schemas.errors import field_errors
from mailer.settings import Settings

# aiohttp-pydantic names the part of the request it validated; the contract's `loc` starts with these.
_LOC_PREFIX = {"body": "body", "query string": "query", "path": "path", "headers": "header"}
# Charsets whose bytes are UTF-8 (ASCII is a subset); anything else the service does not decode.
UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def is_json_type(content_type: str) -> bool:
    """application/json, or a structured-syntax +json type (RFC 6839) such as application/merge-patch+json."""
    main, _, sub = content_type.lower().partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def check_charset(request: web.Request) -> None:
    """415 for a declared charset other than UTF-8: decoding with it would fail or guess."""
    charset = request.charset
    if charset is not None and charset.lower() not in UTF8_CHARSETS:
        raise web.HTTPUnsupportedMediaType(text=f"only UTF-8 is accepted, not charset={clip(charset, 64)}")


def check_json_body(request: web.Request) -> None:
    """415 for a body that does not say it is UTF-8 JSON; a request without a body passes."""
    if not request.body_exists:
        return
    if "Content-Type" not in request.headers:
        raise web.HTTPUnsupportedMediaType(text="the body must be sent with Content-Type: application/json")
    if not is_json_type(request.content_type):
        raise web.HTTPUnsupportedMediaType(
            text=f"the body must be Content-Type: application/json, not {clip(request.content_type, 64)}"
        )
    check_charset(request)


async def read_json(request: web.Request) -> Any:
    """The body parsed as JSON; 415 for a charset other than UTF-8, 400 (via the problem middleware) for
    bytes that are not UTF-8 JSON."""
    check_charset(request)
    raw = await request.read()
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise web.HTTPBadRequest(text="malformed JSON") from None


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The body as a form; 415 for a charset other than UTF-8, or for a type that is no form at all."""
    if request.body_exists and request.content_type not in FORM_TYPES:
        raise web.HTTPUnsupportedMediaType(
            text="send a form (application/x-www-form-urlencoded) or JSON (application/json)"
        )
    check_charset(request)
    return await request.post()


def path_id(request: web.Request) -> int | None:
    """The path's `id` when it is one `ResourceId` accepts (ASCII digits, 1 to 2**63 - 1), else None."""
    raw = request.match_info.get("id")
    if raw is None or not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if 1 <= value <= INT64_MAX else None


class ApiView(PydanticView):
    """A PydanticView whose validation errors are 422 problem+json, with access to the app's state.

    A request with a body must say it is UTF-8 JSON (415 otherwise) unless the view reads another format
    itself (`json_body = False`).

    A view whose GET takes the path's `id` and nothing else sets `reads_by_id` and implements `read_by_id`,
    which its documented `get` calls too: a GET with a valid id then goes straight there, without
    aiohttp-pydantic's per-request injection (these are the API's hottest routes); an invalid one still
    goes through `get` and gets its 404 from the same validation as before.
    """

    json_body: ClassVar[bool] = True
    reads_by_id: ClassVar[bool] = False

    async def _iter(self) -> web.StreamResponse:
        method = self.request.method
        if method == "GET" and self.reads_by_id and (resource_id := path_id(self.request)) is not None:
            return await self.read_by_id(resource_id)
        if self.json_body and method in ("POST", "PUT", "PATCH"):
            check_json_body(self.request)
        response: web.StreamResponse = await super()._iter()
        return response

    async def read_by_id(self, resource_id: int) -> web.StreamResponse:
        raise NotImplementedError(f"{type(self).__name__} sets reads_by_id without read_by_id")

    async def on_validation_error(self, exception: ValidationError, context: Any) -> web.StreamResponse:
        prefix = _LOC_PREFIX.get(str(context), str(context))
        # A bad id in the path names nothing that exists: 404 rather than 422.
        status = 404 if prefix == "path" else 422
        detail = "no such resource" if status == 404 else "the request is not valid"
        return problem(status, detail, field_errors(exception, (prefix,)))

    @property
    def app(self) -> web.Application:
        # PydanticView is untyped (Any to mypy); name the type once here.
        app: web.Application = self.request.app
        return app

    @property
    def db(self) -> AsyncEngine:
        return self.app[keys.DB]

    @property
    def read_db(self) -> AsyncEngine:
        """For handlers that only read: the same pool without transaction round trips."""
        return self.app[keys.READ_DB]

    @property
    def settings(self) -> Settings:
        return self.app[keys.SETTINGS]

    @property
    def engine(self) -> EnginePort:
        return self.app[keys.ENGINE]


def json_model(model: BaseModel, status: int = 200) -> web.Response:
    """Serialise a response model in JSON mode (UTC datetimes with Z)."""
    return web.Response(status=status, text=model.model_dump_json(), content_type="application/json")


def json_data(data: Any, status: int = 200) -> web.Response:
    """Serialise plain JSON data (dicts, lists, strings, numbers) built by a view; the same headers as
    `json_model`. For hot reads whose shape a model already documents: see `mailer.api.mailouts`."""
    return web.Response(
        status=status, body=orjson.dumps(data), content_type="application/json", charset="utf-8"
    )
