"""Keyset pages: one row more than asked tells whether another page exists, without a COUNT."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Page[T]:
    """One page of a keyset listing; `next_after` is None on the last page."""

    items: list[T]
    next_after: int | None


def page_of[T](items: Sequence[T], limit: int, key: Callable[[T], int]) -> Page[T]:
    """Cut a list fetched with `limit + 1` rows: the extra row only says that there is more."""
    if len(items) > limit:
        kept = list(items[:limit])
        return Page(kept, key(kept[-1]))
    return Page(list(items), None)
