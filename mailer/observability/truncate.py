"""Bounding what a client can make the service write: long strings in log lines are cut.

A value a client sends (a username, a path, a header) can be as large as the body limit; logged whole, a
900 KB username writes a 900 KB line, and a few hundred requests fill a disk. `clip` cuts one value at a
call site; `TruncateValues` is a structlog processor that does it to every string of a line. It must run
after the redactor (a secret cut in half would no longer be recognised) and before the renderer.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

# Long enough for any legitimate value we log (paths, ids, user names, error summaries), short enough that a
# line stays one screen wide at worst.
MAX_VALUE_CHARS = 256
# Keys whose text is ours, not a client's, and is useless cut: formatted tracebacks.
UNCLIPPED_KEYS = frozenset({"exception", "stack"})
_MAX_DEPTH = 8
# Values with nothing to clip, passed over without a call.
_SCALARS = frozenset({int, float, bool, type(None)})


def clip(value: str, max_chars: int = MAX_VALUE_CHARS) -> str:
    """`value` if short enough, else its start and a note of how long it was."""
    if len(value) <= max_chars:
        return value
    return f"{value[:max_chars]}…[{len(value)} chars]"


class TruncateValues:
    """A structlog processor: every string longer than `max_chars`, nested ones included, is clipped."""

    def __init__(self, max_chars: int = MAX_VALUE_CHARS) -> None:
        self._max_chars = max_chars

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        max_chars = self._max_chars
        for key, value in event_dict.items():
            kind = type(value)
            # Inline for what almost every value is: a short string or no container at all.
            if kind is str:
                if len(value) > max_chars and key not in UNCLIPPED_KEYS:
                    event_dict[key] = clip(value, max_chars)
            elif kind not in _SCALARS and key not in UNCLIPPED_KEYS:
                event_dict[key] = self._value(value, 0)
        return event_dict

    def _value(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return clip(value, self._max_chars)
        if depth >= _MAX_DEPTH:
            return value
        if isinstance(value, dict):
            return {k: self._value(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(v, depth + 1) for v in value]
        return value
