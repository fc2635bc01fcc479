"""What the send and control APIs share on the wire: JSON error answers and int64 parsing."""

from __future__ import annotations

import re

from aiohttp import web

JSON = "application/json"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT64 = re.compile(r"-?[0-9]{1,19}")


def error(status: int, message: str) -> web.Response:
    """An answer in the provider's own error shape."""
    return web.json_response({"code": status, "message": message}, status=status)


def parse_int64(raw: str) -> int | None:
    if not _INT64.fullmatch(raw):
        return None
    value = int(raw)
    return value if INT64_MIN <= value <= INT64_MAX else None
