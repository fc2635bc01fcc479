"""What the OpenAPI document says that no handler signature can: prose, names, tags, rules, overrides."""

from __future__ import annotations

from typing import Any, Final

from mailer.api import idempotency

JsonObject = dict[str, Any]

OPENAPI_VERSION: Final = "3.1.0"
OAUTH2_SCHEME: Final = "OAuth2PasswordBearer"
BEARER_SCHEME: Final = "BearerToken"
TOKEN_URL: Final = "/auth/token"
API_PREFIX: Final = "/api/"
# Not part of the API: the sandbox is a test double mounted when no provider URL is configured, and the admin
# UI is HTML for browsers (forms with CSRF tokens), described in its own documents.
UNDOCUMENTED_PREFIXES: Final = ("/sandbox", "/admin")
HTTP_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
STATISTICS_TAG: Final = "statistics"

# Old spellings kept for existing clients: each is documented once, deprecated, pointing at its successor.
ALIASES: Final[dict[str, str]] = {
    "/api/customers": "/api/customers/",
    "/api/mailouts/status/stats": "/api/mailouts/stats",
    "/api/mailouts/{id}/messages/stats": "/api/mailouts/{id}/stats",
}

DESCRIPTION: Final = """\
mailer sends notification mailouts to customers, each within the customer's own local hours, through an
external send provider that may fail.

**Authentication.** Every `/api/*` route needs `Authorization: Bearer <access_token>`. Obtain a token from
`POST /auth/token` with the administrator's username and password (the OAuth2 password grant, or JSON); in
this page, *Authorize* does it for you (the token is kept only until the page is closed or reloaded).

**Conventions.** JSON in and out. Datetimes are RFC 3339 text with an offset
(`2026-12-01T09:00:00+03:00`); output is UTC with `Z`. Errors are `application/problem+json` (RFC 9457)
and each entry of `errors` says what was expected. Lists return `{"items": [...], "next_after": id-or-null}`
and take `limit` and `after`. Unknown body fields are rejected with 422.

**Retries.** Every create takes an `Idempotency-Key` header: the same key with the same body within 24 hours
answers the first response again (with `Idempotent-Replayed: true`) and creates nothing.
"""

# Why each problem status can happen; the wording is shown in Swagger UI next to the status.
PROBLEM_REASONS: Final[dict[int, str]] = {
    400: "malformed JSON or an unreadable body",
    401: "no access token, or one that is invalid or expired",
    404: "no resource has this id",
    409: "the request conflicts with the resource's current state",
    413: "the body is larger than the server accepts",
    415: "the body's content type is not one this operation reads",
    422: "the request is well-formed but not valid; `errors` lists each field",
    429: "too many attempts from this client; see Retry-After",
    503: "the database is unreachable for the moment; retry after Retry-After seconds",
}

TAGS: Final[dict[str, str]] = {
    "auth": "Access tokens for the API.",
    "customers": "The people messages go to.",
    "mailouts": "A text sent to every matching customer between a start and an end.",
    "messages": "One mailout's message to one customer, with its attempts.",
    STATISTICS_TAG: "Message counts of mailouts, and the outcome of their provider requests.",
    "audience": "Who a mailout would reach.",
    "search": "One query over customers and mailouts.",
    "system": "What the service is, whether it is alive and ready, its metrics.",
    "docs": "This documentation.",
}

# Responses that have no body by definition (RFC 9110), whatever a view's annotation says.
NO_BODY_STATUSES: Final = frozenset({"204", "304"})

IDEMPOTENCY_PARAMETER: Final[JsonObject] = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: the same key with the same body within 24 hours answers the first response "
        "again and creates nothing; with another body it is 422; while the first request still runs, 409. "
        "Keys are per API user."
    ),
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_CHARS,
        "pattern": idempotency.KEY_PATTERN,
    },
    "example": "9f0c2a5e-3b1d-4c8e-9a7f-2d6b1e4c8a90",
}

_MAILOUT_RULES: Final = (
    "`end_at` must be later than `start_at`; a `send_window` needs `start` different from `end`; every "
    "instant must lie between 0001-01-02T00:00:00Z and 9999-12-30T23:59:59Z once converted to UTC. Each "
    "broken rule is a 422 naming its field."
)
# Rules JSON Schema cannot state (they relate two fields, or a field and the calendar): written into the
# operation's description, under one heading, so that a client reads them where it reads the schema.
RULES: Final[dict[tuple[str, str], str]] = {
    ("post", "/api/mailouts/"): _MAILOUT_RULES,
    ("put", "/api/mailouts/{id}"): _MAILOUT_RULES,
    ("patch", "/api/mailouts/{id}"): "After the change: " + _MAILOUT_RULES,
    ("post", "/api/audience/count"): "A `send_window` needs `start` different from `end` (422 otherwise).",
    ("post", "/api/customers/import"): (
        "A CSV header names columns among `phone`, `operator_code`, `tag` and `timezone`, each at most once, "
        "`phone` among them; another header is a 422 naming `header`, and nothing is written."
    ),
}
RULES_HEADING: Final = "**Rules the schema cannot state.**"

# What aiohttp-pydantic cannot see in a view's signature: the import reads its body itself, as text.
_IMPORT_BODY_SCHEMA: Final[JsonObject] = {"type": "string", "description": "the whole body, UTF-8"}
OVERRIDES: Final[dict[tuple[str, str], JsonObject]] = {
    ("post", "/api/customers/import"): {
        "requestBody": {
            "required": True,
            "description": "NDJSON, one customer object per line, or CSV with a header row.",
            "content": {
                "application/x-ndjson": {
                    "schema": _IMPORT_BODY_SCHEMA,
                    "example": '{"phone": "79001234567", "tag": "vip", "timezone": "Europe/Moscow"}\n'
                    '{"phone": 79007654321}\n',
                },
                "text/csv": {
                    "schema": _IMPORT_BODY_SCHEMA,
                    "example": "phone,tag,timezone\n79001234567,vip,Europe/Moscow\n79007654321,,\n",
                },
            },
        }
    },
}
