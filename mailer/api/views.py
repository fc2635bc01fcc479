"""The base of every API view: aiohttp-pydantic validation, with errors in the contract's shape."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_pydantic import PydanticView
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer import keys
from mailer.api.engine_port import EnginePort
from mailer.api.problems import field_errors, problem
from mailer.settings import Settings

# aiohttp-pydantic names the part of the request it validated; the contract's `loc` starts with these.
_LOC_PREFIX = {"body": "body", "query string": "query", "path": "path", "headers": "header"}


class ApiView(PydanticView):
    """A PydanticView whose validation errors are 422 problem+json, with access to the app's state."""

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
