"""Who is asking: the client's address behind MAILER_TRUSTED_PROXIES trusted proxies.

Both faces rate-limit sign-ins by it (the API's `POST /auth/token` and the admin UI's login form), so it lives
beside them rather than in either.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from aiohttp import hdrs, web

from mailer import keys

UNKNOWN_CLIENT: Final = "unknown"


def client_address(peer: str | None, forwarded_for: list[str], trusted_hops: int) -> str:
    """The client's address, trusting the last `trusted_hops` proxies' `X-Forwarded-For` entries.

    Each proxy appends the address it was reached from, so with N trusted proxies in front the N-th entry
    from the right is the one the outermost trusted proxy saw; entries further left are whatever the client
    wrote and prove nothing. With fewer entries than hops the leftmost is the best there is. An entry that
    is not an IP address means the chain is not what the setting says: fall back to the peer.
    """
    if trusted_hops <= 0:
        return peer or UNKNOWN_CLIENT
    entries = [part.strip() for header in forwarded_for for part in header.split(",") if part.strip()]
    if not entries:
        return peer or UNKNOWN_CLIENT
    candidate = entries[max(0, len(entries) - trusted_hops)]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer or UNKNOWN_CLIENT


def request_client(request: web.Request) -> str:
    """The client's address as the sign-in rate limits see it (MAILER_TRUSTED_PROXIES hops trusted)."""
    return client_address(
        request.remote,
        request.headers.getall(hdrs.X_FORWARDED_FOR, []),
        request.config_dict[keys.SETTINGS].trusted_proxies,
    )
