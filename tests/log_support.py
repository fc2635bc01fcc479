"""Capturing the service's real log output (JSON lines, through configure_logging) in a test."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog

from mailer.observability.logging import configure_logging
from mailer.settings import Settings


@dataclass
class CapturedLogs:
    """The JSON lines written while capturing; `text` is the raw output for "never appears" checks."""

    stream: io.StringIO = field(default_factory=io.StringIO)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]


@contextmanager
def captured_logs(settings: Settings) -> Iterator[CapturedLogs]:
    """Configure logging as the service does, into a buffer; restore pytest's handlers afterwards.

    Prefer this to `structlog.testing.capture_logs`, which misses loggers that an earlier
    `configure_logging` (the CLI's, in another test) cached on first use.
    """
    captured = CapturedLogs()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging(settings, stream=captured.stream, cache_loggers=False)
    try:
        yield captured
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.reset_defaults()
