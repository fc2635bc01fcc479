"""Search: `GET /api/search?q=` and the original task's `POST /search` (JSON `{"q"}`), one query each over
customers (id, phone or its prefix, operator code, tag) and mailouts (id, text)."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from aiohttp_pydantic.oas.typing import r200, r401, r422
from pydantic import AfterValidator, BaseModel, Field

from mailer.api.auth import require_token
from mailer.api.views import ApiView, json_model
from mailer.operations import search as operations
from mailer.schemas.common import DEFAULT_PAGE_SIZE, PageLimit, Problem, StrictModel
from mailer.schemas.customers import Customer
from mailer.schemas.mailouts import MailoutOut

API_PATH = "/api/search"
SEED_PATH = "/search"


def _searchable(value: str) -> str:
    reason = operations.check_query(value)
    if reason is not None:
        raise ValueError(reason)
    return value


Query = Annotated[
    str,
    Field(
        max_length=operations.MAX_QUERY_CHARS,
        description="a phone or its prefix, a customer or mailout id, a tag, an operator code, mailout text",
        examples=["7900"],
    ),
    AfterValidator(_searchable),
]


class SearchBody(StrictModel):
    """The seed's search request."""

    q: Query
    limit: PageLimit = DEFAULT_PAGE_SIZE


class SearchResults(BaseModel):
    """What matched, by kind; each list at most `limit` long, customers by id, mailouts newest first."""

    customers: list[Customer]
    mailouts: list[MailoutOut]


async def _results(view: ApiView, q: str, limit: int) -> web.Response:
    found = await operations.search(view.read_db, q, limit)
    body = SearchResults(
        customers=[Customer.model_validate(row) for row in found.customers],
        mailouts=[MailoutOut.from_domain(m) for m in found.mailouts],
    )
    return json_model(body)


class ApiSearchView(ApiView):
    """`GET /api/search`."""

    async def get(
        self, q: Query, limit: PageLimit = DEFAULT_PAGE_SIZE
    ) -> r200[SearchResults] | r422[Problem]:
        """Search customers and mailouts.

        `q` is read every way it can mean something: digits are a customer or mailout id, a phone starting
        with 7 (or its prefix, spaces, brackets and dashes ignored) and, three digits long, an operator code;
        any text is a tag (exact) and a piece of mailout text (case-insensitive). Results are grouped by
        kind, each list at most `limit` long.

        Tags: search
        """
        return await _results(self, q, limit)


class SeedSearchView(ApiView):
    """`POST /search`, as the original task names it; it needs the access token like every /api route."""

    async def _iter(self) -> web.StreamResponse:
        # Outside /api/, so the auth middleware does not see it: check the token before the body, so a
        # request without one is a 401 whatever it sends.
        require_token(self.request)
        return await super()._iter()

    async def post(self, body: SearchBody) -> r200[SearchResults] | r401[Problem] | r422[Problem]:
        """Search customers and mailouts (the same search as `GET /api/search`).

        Needs `Authorization: Bearer <access_token>`. The body is `{"q": "...", "limit": 50}`.

        Tags: search
        """
        return await _results(self, body.q, body.limit)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_view(API_PATH, ApiSearchView)
    router.add_view(SEED_PATH, SeedSearchView)
