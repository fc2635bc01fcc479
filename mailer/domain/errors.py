"""Domain errors: what went wrong in the service's own terms; `api.problems` maps them to HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DomainError(Exception):
    """Base of every error a client can cause."""


class NotFoundError(DomainError):
    def __init__(self, resource: str, ident: object) -> None:
        super().__init__(f"{resource} {ident} not found")
        self.resource = resource
        self.ident = ident


class ConflictError(DomainError):
    """The request contradicts the current state (a duplicate phone, a filter change on a running mailout)."""


@dataclass(frozen=True, slots=True)
class FieldError:
    loc: tuple[str | int, ...]
    msg: str


class InvalidError(DomainError):
    """Input that is well-formed but not acceptable; carries one error per field."""

    def __init__(self, errors: Sequence[FieldError], detail: str = "the request is not valid") -> None:
        super().__init__(detail)
        self.errors = list(errors)


class AuthenticationError(DomainError):
    """No credentials, or credentials that do not check out."""


class RateLimitedError(DomainError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__("too many attempts; try again later")
        self.retry_after_s = retry_after_s
