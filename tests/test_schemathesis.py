"""Property-based fuzzing of the live API with schemathesis: no 5xx, and every response as the document says.

The server is the real application on a loopback port, run by its own event loop in a thread, because
schemathesis makes blocking HTTP calls from the test's thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode, checks

from mailer.api.openapi.document import build_openapi
from mailer.api.openapi.texts import HTTP_METHODS as METHODS
from mailer.app import create_app
from mailer.settings import Settings
from tests.conftest import ADMIN_PASSWORD, JWT_SECRET

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
# Bounded for a quick, reproducible run: every operation gets this many generated requests per mode.
MAX_EXAMPLES = 15
# One request, with its database work, must not take longer than this.
EXAMPLE_DEADLINE_MS = 5000
# Rules JSON Schema cannot state, written in the operations' descriptions instead: a generated request that
# is valid by the schema may break them, and the 422 that names exactly such a rule is the documented answer.
# (loc, words of the message) of each; anything else refused with valid data is a disagreement.
CROSS_FIELD_RULES = (
    (["body", "end_at"], "later than start_at"),
    (["body", "send_window"], "start and end must differ"),
    (["body", "start_at"], "between 0001-01-02T00:00:00Z and 9999-12-30T23:59:59Z"),
    (["body", "end_at"], "between 0001-01-02T00:00:00Z and 9999-12-30T23:59:59Z"),
    (["body", "header"], ""),
    # A key reused for another body: the header's description says so; the fuzzer reuses short keys.
    (["header", "Idempotency-Key"], "was used with another request body"),
)
TEXT_BODY_TYPES = ("text/csv", "application/x-ndjson")


def _breaks_only_documented_rules(response: Any) -> bool:
    if response.status_code != 422:
        return False
    try:
        errors = json.loads(response.content)["errors"]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(errors) and all(
        any(error["loc"][: len(loc)] == loc and words in error["msg"] for loc, words in CROSS_FIELD_RULES)
        for error in errors
    )


def positive_data_acceptance(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's check, less the 422s of the documented rules above."""
    if _breaks_only_documented_rules(response):
        return None
    result: bool | None = checks.positive_data_acceptance(ctx, response, case)
    return result


def negative_data_rejection(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's check, less bodies that are not text for a text media type: on the wire every body of
    text/csv or NDJSON is text, so "an array instead of a string" cannot be sent, only its JSON spelling."""
    if case.media_type in TEXT_BODY_TYPES and not isinstance(case.body, str):
        return None
    result: bool | None = checks.negative_data_rejection(ctx, response, case)
    return result


def _every_check() -> list[Any]:
    """Every check schemathesis has (`--checks all`), two of them narrowed as described above."""
    checks.load_all_checks()
    narrowed = {checks.positive_data_acceptance, checks.negative_data_rejection}
    every = [check for check in checks.CHECKS.get_all() if check not in narrowed]
    return [*every, positive_data_acceptance, negative_data_rejection]


CHECKS = _every_check()


@schemathesis.serializer("text/csv", "application/x-ndjson")
def _text_body(ctx: Any, value: Any) -> bytes | None:
    """The import reads raw text; schemathesis knows no serializer for these media types by itself."""
    if value is None:
        return None
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else json.dumps(value).encode()


class LiveServer(threading.Thread):
    """The app served on a free loopback port until `stop()`; start-up errors surface in the caller."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(name="live-server", daemon=True)
        self.app = app
        self.port = 0
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def _serve(self) -> None:
        runner = web.AppRunner(self.app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, HOST, 0)
            await site.start()
            self.port = runner.addresses[0][1]
            self._loop = asyncio.get_running_loop()
            self._stop_event = asyncio.Event()
            self.ready.set()
            await self._stop_event.wait()
        finally:
            await runner.cleanup()

    def start_and_wait(self) -> str:
        self.start()
        if not self.ready.wait(START_TIMEOUT_S):
            raise TimeoutError("the server did not start")
        if self.error is not None:
            raise self.error
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self.join(START_TIMEOUT_S)
        if self.error is not None:
            raise self.error


def _settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url, admin_password=ADMIN_PASSWORD, jwt_secret=JWT_SECRET, log_format="json"
    )


def _cases() -> list[Any]:
    """One test per documented operation and generation mode, known at collection so each reports alone.

    Negative mode needs something to break (a parameter or a body); an operation without inputs has none.
    """
    doc = build_openapi(create_app(_settings("sqlite:///unused.db"), with_engine=False))
    out: list[Any] = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            modes = [GenerationMode.POSITIVE]
            if op.get("parameters") or op.get("requestBody"):
                modes.append(GenerationMode.NEGATIVE)
            out.extend(
                pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
                for mode in modes
            )
    return out


class Live:
    """A running server, the schema it serves, and a token for it."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {_access_token(base_url)}"}
        with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=10) as resp:
            self.schema: Any = schemathesis.openapi.from_dict(json.load(resp))
        # One keep-alive connection for every request, rather than a new connection per generated case.
        self.session = requests.Session()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'mailer.db'}"
    else:
        database_url = request.getfixturevalue("pg_url")
    server = LiveServer(create_app(_settings(database_url), with_engine=False))
    url = server.start_and_wait()
    try:
        live = Live(url)
        with live.session:
            yield live
    finally:
        server.stop()


def _access_token(base_url: str) -> str:
    form = urllib.parse.urlencode({"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD})
    with urllib.request.urlopen(f"{base_url}/auth/token", data=form.encode(), timeout=10) as resp:
        return str(json.load(resp)["access_token"])


def _run(live: Live, strategy: SearchStrategy[Any], max_examples: int) -> None:
    @given(case=strategy)
    @settings(
        max_examples=max_examples,
        deadline=EXAMPLE_DEADLINE_MS,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=live.base_url, session=live.session, headers=live.headers, checks=CHECKS
        )

    check()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_operation_conforms_to_the_document(live: Live, method: str, path: str, mode: GenerationMode) -> None:
    operation = live.schema[path][method]
    _run(live, operation.as_strategy(generation_mode=mode), MAX_EXAMPLES)
    if mode is GenerationMode.POSITIVE:
        # The document's own examples are requests too: each must get a documented answer.
        for strategy in live.schema.get_strategies_from_examples(operation):
            _run(live, strategy, 1)
