"""structlog set-up: JSON lines (or a console format on a terminal), context from contextvars, no secrets.

Every line, from structlog or from the standard library (aiohttp, SQLAlchemy, alembic), goes through one
formatter whose last step before rendering is `Redactor`: values under secret-looking keys, the configured
secrets wherever they occur, bearer tokens, JWTs and passwords in URLs are replaced. Code should never log a
secret in the first place; the redactor is the net under that rule, and covers tracebacks too.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import Any, TextIO

import orjson
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailer.observability.truncate import TruncateValues
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
# Every pattern above needs one of these to match (a cheap test before the substitutions).
_SUSPECT = re.compile(r"(?i)bearer|basic|eyJ|://")
# Values that are never text: passed through as they are.
_PLAIN = frozenset({int, float, bool})
_MAX_DEPTH = 8


@functools.lru_cache(maxsize=1024)
def _is_secret_key(key: str) -> bool:
    """Cached: the code logs a few dozen distinct keys, each on every line (bounded: nested keys, such as
    header names, come from clients)."""
    return key not in NOT_SECRET_KEYS and SECRET_KEY.search(key) is not None


# Secrets that exist only at run time (a generated administrator password or signing key), and how many
# times that set changed (each redactor forgets the texts it found clean when it does).
_RUNTIME_SECRETS: set[str] = set()
_runtime_changes = 0

# Keys our own processors fill from code (never from a client): nothing to redact there.
_OWN_KEYS = frozenset({"timestamp", "level", "logger"})
# Texts this short that were found clean are remembered, up to this many: event names and outcome words
# recur on every line, and searching each again was most of the redactor's cost.
_CLEAN_TEXT_MAX_CHARS = 64
_CLEAN_TEXTS_MAX = 4096


def register_secret(value: str) -> None:
    """Have every formatter configured by `configure_logging`, before or after this call, redact `value`."""
    global _runtime_changes
    if len(value) >= MIN_SECRET_CHARS and value not in _RUNTIME_SECRETS:
        _RUNTIME_SECRETS.add(value)
        _runtime_changes += 1


class Redactor:
    """A structlog processor that removes secrets from an event dict, nested values included."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first: a secret that contains another must be replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self._clean: set[str] = set()
        self._clean_as_of = _runtime_changes

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            # Inline for the usual values (ids, counts, durations, None): a call per value of every line was
            # a third of the redactor's cost.
            if value is None or key in _OWN_KEYS:
                continue
            if type(key) is str and _is_secret_key(key):
                event_dict[key] = REDACTED
            elif type(value) not in _PLAIN:
                event_dict[key] = self._value(key, value, 0)
        return event_dict

    def text(self, value: str) -> str:
        short = len(value) <= _CLEAN_TEXT_MAX_CHARS
        if short:
            if self._clean_as_of != _runtime_changes:
                self._clean.clear()
                self._clean_as_of = _runtime_changes
            if value in self._clean:
                return value
        original = value
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        for secret in _RUNTIME_SECRETS:
            if secret in value:
                value = value.replace(secret, REDACTED)
        # One search first: almost no line holds anything a pattern replaces, and three substitutions per
        # string of every line were a tenth of the cost of logging.
        if _SUSPECT.search(value) is not None:
            for pattern, replacement in _PATTERNS:
                value = pattern.sub(replacement, value)
        if short and value is original and len(self._clean) < _CLEAN_TEXTS_MAX:
            self._clean.add(value)
        return value

    def _value(self, key: object, value: Any, depth: int) -> Any:
        if value is None:
            return None
        if isinstance(key, str) and _is_secret_key(key):
            return REDACTED
        if type(value) in _PLAIN:
            return value
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


def _orjson_text(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """JSON text of a log line: orjson (compact, about ten times faster than `json`), anything odd via str."""
    return orjson.dumps(value, default=default or str, option=orjson.OPT_NON_STR_KEYS).decode()


# Inside `info_per_id`: the key the ids go under, the ids, and whether the sinks wrote the lines.
_PER_ID: contextvars.ContextVar[_PerId | None] = contextvars.ContextVar("mailer_log_per_id", default=None)


class _PerId:
    __slots__ = ("ids", "key", "written")

    def __init__(self, key: str, ids: Sequence[int]) -> None:
        self.key, self.ids, self.written = key, ids, False


def info_per_id(logger: Any, event: str, key: str, ids: Sequence[int], **fields: Any) -> None:
    """`logger.info(event, **{key: id}, **fields)` for each of `ids`: one line per id, under a microsecond
    each instead of about 15 for as many calls (an import's line per customer).

    The processors (context, level, timestamp, redactor, truncation) run once, on the first id's event; the
    other lines are that processed event with `key` set to their id, and all of them are written at once,
    with one flush. The lines are the ones the processors would have made for each id (except that they share
    one timestamp): an int passes the redactor and the truncation unchanged, under any key that does not
    look secret, and a key that does is refused here.
    """
    if not ids:
        return
    if _is_secret_key(key) or not all(type(i) is int for i in ids):
        raise ValueError("info_per_id takes int ids under a key that is not secret-looking")
    per_id = _PerId(key, ids)
    token = _PER_ID.set(per_id)
    try:
        logger.info(event, **{key: ids[0]}, **fields)
    finally:
        _PER_ID.reset(token)
    if not per_id.written:
        # Not our sinks (structlog configured elsewhere, as in some tests) or the level is off: the usual way.
        for each in ids[1:]:
            logger.info(event, **{key: each}, **fields)


class _Pipeline:
    """What `configure_logging` set up for structlog's lines, for `info_lines` to run without a call each."""

    __slots__ = ("level", "processors", "sinks")

    def __init__(self, processors: list[Any], sinks: _LineSinks, level: int) -> None:
        self.processors, self.sinks, self.level = processors, sinks, level


_PIPELINE: _Pipeline | None = None


def info_lines(logger_name: str, lines: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """`structlog.get_logger(logger_name).info(event, **fields)` for each `(event, fields)` of `lines` (a
    batch of the recorder's state lines), in about half the CPU: the configured processors (context, level,
    timestamp, redactor, truncation) run on each line's event dict directly, without structlog's
    bound-logger call around each, and all the lines are written with one write and one flush per target.
    The lines are those the calls would make.

    Where structlog is configured by something else (a test capturing logs), the plain calls are made.
    """
    pipeline = _PIPELINE
    if pipeline is None or structlog.get_config()["processors"] is not pipeline.processors:
        logger = structlog.get_logger(logger_name)
        for event, fields in lines:
            logger.info(event, **fields)
        return
    if pipeline.level > logging.INFO:
        return
    line_logger = _LineLogger(logger_name, pipeline.sinks)
    events = []
    for event, fields in lines:
        # As the bound logger builds it: the call's fields, then the event (then what processors add).
        event_dict: Any = {**fields, "event": event}
        for processor in pipeline.processors:
            event_dict = processor(line_logger, "info", event_dict)
        events.append(event_dict)
    pipeline.sinks.write_all(events)


class _LineSinks:
    """Where structlog's lines go: each target with its renderer; one render per renderer, one write and
    one flush per target and call (a line is on disk before the next is built: `kill -9` loses none; the
    lines of one `info_per_id` are built and written together)."""

    def __init__(self, targets: Sequence[tuple[TextIO, Renderer]]) -> None:
        self._targets = targets
        self._lock = threading.Lock()

    def write(self, event: dict[str, Any]) -> None:
        per_id = _PER_ID.get()
        if per_id is not None and event.get(per_id.key) == per_id.ids[0]:
            per_id.written = True
            self.write_all([event | {per_id.key: each} for each in per_id.ids])
        else:
            self.write_all([event])

    def write_all(self, events: Sequence[dict[str, Any]]) -> None:
        """Each event as a line, all of them in one write and one flush per target."""
        rendered: dict[int, str] = {}
        for _stream, render in self._targets:
            if id(render) not in rendered:
                # The console renderer pops what it prints: it gets its own copy.
                rendered[id(render)] = "".join(render(dict(each)) + "\n" for each in events)
        with self._lock:
            for stream, render in self._targets:
                stream.write(rendered[id(render)])
                stream.flush()


class _LineLogger:
    """What structlog's bound loggers wrap: every level hands the finished event to the sinks."""

    __slots__ = ("_sinks", "name")

    def __init__(self, name: str, sinks: _LineSinks) -> None:
        self.name = name
        self._sinks = sinks

    def msg(self, **event: Any) -> None:
        self._sinks.write(event)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


Renderer = Callable[[dict[str, Any]], str]


def _json_renderer(event: dict[str, Any]) -> str:
    return _orjson_text(event)


def _console_renderer() -> Renderer:
    console = structlog.dev.ConsoleRenderer()

    def render(event: dict[str, Any]) -> str:
        return str(console(None, "", event))

    return render


def configure_logging(
    settings: Settings,
    *,
    stream: TextIO | None = None,
    extra_secrets: Iterable[str] = (),
    cache_loggers: bool = True,
) -> logging.Handler:
    """Route structlog and the standard library's logging to one JSON (or console) output.

    Lines go to `stream` (stdout by default) and, when `log_file` is set, to that file as well. Returns the
    standard library's stream handler (tests remove it again). `extra_secrets` are values known only at run
    time, such as the generated administrator password. `cache_loggers=False` is for tests: a logger cached
    on first use keeps this configuration for good.

    structlog's own lines take the fast path: a level below `log_level` costs one no-op call (the bound
    logger is built for that level), loggers are cached on first use, and each line is rendered once by
    orjson and written straight to its targets, without the standard library's logging machinery. Lines of
    libraries (aiohttp, SQLAlchemy, alembic) go through a `logging` handler with the same processors.
    """
    target = stream if stream is not None else sys.stdout
    use_console = settings.log_format == "console" or (
        settings.log_format == "auto" and stream is None and sys.stdout.isatty()
    )
    redactor = Redactor([*configured_secrets(settings), *extra_secrets])
    truncate = TruncateValues()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    stream_render = _console_renderer() if use_console else _json_renderer
    # The standard library's handlers own the streams (a test or a shutdown closes them there); structlog's
    # lines are written to the same stream objects, so the two kinds of line never interleave mid-line.
    handlers: list[logging.StreamHandler[Any]] = [logging.StreamHandler(target)]
    renderers: list[Renderer] = [stream_render]
    if settings.log_file:
        # A file is read by tools, not people: always JSON lines.
        handlers.append(logging.FileHandler(settings.log_file, encoding="utf-8"))
        renderers.append(_json_renderer)
    targets = [(handler.stream, render) for handler, render in zip(handlers, renderers, strict=True)]
    sinks = _LineSinks(targets)
    global _PIPELINE
    processors: list[Any] = [
        *shared,
        # Tracebacks become text before the redactor, so it sees them too.
        structlog.processors.format_exc_info,
        redactor,
        # After the redactor: a secret cut in half would no longer be recognised.
        truncate,
        # The event dict itself goes to `_LineLogger.msg`, which renders it once per renderer.
        lambda _logger, _method, event_dict: event_dict,
    ]
    level = logging.getLevelNamesMapping()[settings.log_level]
    _PIPELINE = _Pipeline(processors, sinks, level)
    structlog.configure(
        processors=processors,
        logger_factory=lambda *args: _LineLogger(str(args[0]) if args else "", sinks),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=cache_loggers,
    )

    def formatter(renderer: Any) -> logging.Formatter:
        return structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redactor,
                truncate,
                renderer,
            ],
        )

    json_renderer = structlog.processors.JSONRenderer(serializer=_orjson_text)
    for handler, render in zip(handlers, renderers, strict=True):
        handler.setFormatter(
            formatter(structlog.dev.ConsoleRenderer() if render is not _json_renderer else json_renderer)
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for added in handlers:
        root.addHandler(added)
    root.setLevel(settings.log_level)
    # aiohttp's access log duplicates our own request logging.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handlers[0]
