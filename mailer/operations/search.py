"""One search over customers and mailouts: what a typed query may mean, and the lookups that follow."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.customers import TAG_MAX_CHARS, is_phone_prefix
from mailer.domain.mailouts import Mailout
from mailer.store import search as store
from mailer.store.customers import CustomerRow
from mailer.store.search import SearchTerms

INT64_MAX = 2**63 - 1
# Longer queries name nothing we store (a tag is at most 64 characters, a text fragment that long is
# a paste): refusing them keeps every lookup small.
MAX_QUERY_CHARS = 200
OPERATOR_CODE_DIGITS = 3
# People type phones as "+7 (900) 123-45-67": those separators are not part of the number.
_PHONE_SEPARATORS = re.compile(r"[\s()+\-.]")


@dataclass(frozen=True, slots=True)
class SearchResult:
    customers: list[CustomerRow]
    mailouts: list[Mailout]


def terms_for(query: str) -> SearchTerms:
    """What `query` may mean: an id, a phone or its prefix, an operator code, a tag, a piece of text."""
    text = query.strip()
    if not text:
        return SearchTerms()
    digits = _PHONE_SEPARATORS.sub("", text)
    ident = int(text) if text.isascii() and text.isdigit() and int(text) <= INT64_MAX else None
    phone_prefix = digits if is_phone_prefix(digits) else None
    operator_code = text if ident is not None and len(text) == OPERATOR_CODE_DIGITS else None
    tag = text if len(text) <= TAG_MAX_CHARS else None
    return SearchTerms(
        ident=ident, phone_prefix=phone_prefix, operator_code=operator_code, tag=tag, text=text
    )


def check_query(query: str) -> str | None:
    """Why the query cannot be searched, or None."""
    if len(query) > MAX_QUERY_CHARS:
        return f"at most {MAX_QUERY_CHARS} characters"
    if "\x00" in query:
        return "must not contain NUL characters"
    return None


async def search(db: AsyncEngine, query: str, limit: int) -> SearchResult:
    """Customers and mailouts the query matches, each at most `limit` (check the query first)."""
    terms = terms_for(query)
    return SearchResult(
        customers=await store.find_customers(db, terms, limit),
        mailouts=await store.find_mailouts(db, terms, limit),
    )
