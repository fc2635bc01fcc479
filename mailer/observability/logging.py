"""structlog set-up: JSON lines (or a console format on a terminal), context from contextvars, no secrets.

Every line, from structlog or from the standard library (aiohttp, SQLAlchemy, alembic), goes through one
formatter whose last step before rendering is `Redactor`: values under secret-looking keys, the configured
secrets wherever they occur, bearer tokens, JWTs and passwords in URLs are replaced. Code should never log a
secret in the first place; the redactor is the net under that rule, and covers tracebacks too.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailer.settings import Settings

REDACTED = "[redacted]"
# A key is secret when its name contains one of these words (case-insensitive): "Authorization" headers,
# "password", "smtp_password", "provider_token", "jwt_secret", "Cookie", "api_key".
SECRET_KEY = re.compile(
    r"authorization|passw(or)?d|secret|token|cookie|api[_-]?key|credential", re.IGNORECASE
)
# Keys that match the pattern above but hold no secret, and that the docs tell operators to look at.
NOT_SECRET_KEYS = frozenset({"token_type"})
# Shorter configured secrets are not searched for in free text: replacing "ab" everywhere would garble the log
# and a secret that short is guessable anyway. They are still redacted under secret-looking keys.
MIN_SECRET_CHARS = 6
_PATTERNS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    # scheme://user:password@host: keep the user, drop the password.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*):[^\s@/]+@"), r"\1:" + REDACTED + "@"),
)
_MAX_DEPTH = 8
# Secrets that exist only at run time (a generated administrator password or signing key).
_RUNTIME_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Have every formatter configured by `configure_logging`, before or after this call, redact `value`."""
    if len(value) >= MIN_SECRET_CHARS:
        _RUNTIME_SECRETS.add(value)


class Redactor:
    """A structlog processor that removes secrets from an event dict, nested values included."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first: a secret that contains another must be replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            event_dict[key] = self._value(key, value, 0)
        return event_dict

    def text(self, value: str) -> str:
        for secret in (*self._secrets, *_RUNTIME_SECRETS):
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def _value(self, key: object, value: Any, depth: int) -> Any:
        if (
            isinstance(key, str)
            and key not in NOT_SECRET_KEYS
            and SECRET_KEY.search(key)
            and value is not None
        ):
            return REDACTED
        if depth > _MAX_DEPTH:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "replace"))
        if isinstance(value, MutableMapping | dict):
            return {k: self._value(k, v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._value(None, v, depth + 1) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        # Anything else is rendered with str() by the JSON renderer; redact that text (the object may hold one
        # of our secrets, for example an exception message quoting a header).
        return self.text(str(value))


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold: these are searched for in every log line."""
    found = [
        secret.get_secret_value()
        for secret in (
            settings.provider_token,
            settings.admin_password,
            settings.jwt_secret,
            settings.sandbox_token,
            settings.smtp_password,
        )
        if secret is not None
    ]
    try:
        password = make_url(settings.database_url).password
    except ArgumentError:
        password = None
    if password:
        found.append(str(password))
    return found


def configure_logging(
    settings: Settings,
    *,
    stream: TextIO | None = None,
    extra_secrets: Iterable[str] = (),
    cache_loggers: bool = True,
) -> logging.Handler:
    """Route structlog and the standard library's logging through one JSON (or console) renderer.

    Lines go to `stream` (stdout by default) and, when `log_file` is set, to that file as well. Returns the
    stream handler (tests remove it again). `extra_secrets` are values known only at run time, such as the
    generated administrator password. `cache_loggers=False` is for tests: a logger cached on first use keeps
    this configuration for good, and `structlog.testing.capture_logs` can then no longer see its lines.
    """
    target = stream if stream is not None else sys.stdout
    use_console = settings.log_format == "console" or (
        settings.log_format == "auto" and stream is None and sys.stdout.isatty()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=cache_loggers,
    )
    redactor = Redactor([*configured_secrets(settings), *extra_secrets])

    def formatter(renderer: Any) -> logging.Formatter:
        return structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # Tracebacks become text before the redactor, so it sees them too.
                structlog.processors.format_exc_info,
                redactor,
                renderer,
            ],
        )

    stream_handler = logging.StreamHandler(target)
    stream_handler.setFormatter(
        formatter(structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer())
    )
    handlers: list[logging.Handler] = [stream_handler]
    if settings.log_file:
        # A file is read by tools, not people: always JSON lines.
        file_handler = logging.FileHandler(settings.log_file, encoding="utf-8")
        file_handler.setFormatter(formatter(structlog.processors.JSONRenderer()))
        handlers.append(file_handler)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    # aiohttp's access log duplicates our own request logging.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return stream_handler
