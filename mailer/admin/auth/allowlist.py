"""Who may enter the admin UI once the provider vouched for them: pure functions over ID token claims."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DOMAIN_WILDCARD = "*@"


@dataclass(frozen=True)
class Verdict:
    """Admitted or not, and the rule that decided, in words for the log (never a token)."""

    admitted: bool
    reason: str


def normalise_email(value: object) -> str | None:
    """A lower-cased address: one @ between a local part and a domain, no spaces; else None."""
    if not isinstance(value, str):
        return None
    local, at, domain = value.strip().lower().rpartition("@")
    if not at or not local or not domain or "@" in local or any(char.isspace() for char in local + domain):
        return None
    return f"{local}@{domain}"


def email_is_verified(claims: Mapping[str, Any]) -> bool:
    """False only when the provider says the address is unverified; a provider that says nothing is believed.

    Some providers send the claim as the string "true" (AWS Cognito); anything but true or "true" is a no.
    """
    if "email_verified" not in claims:
        return True
    flag = claims["email_verified"]
    return flag is True or (isinstance(flag, str) and flag.lower() == "true")


def claim_groups(claims: Mapping[str, Any], claim: str) -> frozenset[str]:
    """The groups a claim lists: a list of strings or one string; a dotted path reaches into objects.

    The name is looked up whole first: Auth0's custom claims are URLs (`https://mailer.example/groups`) whose
    dots are no path. Then as a path, for Keycloak's `realm_access.roles`.
    """
    value: Any = claims.get(claim)
    if value is None and "." in claim:
        value = claims
        for part in claim.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return frozenset({value}) if value else frozenset()
    if isinstance(value, list | tuple):
        return frozenset(item for item in value if isinstance(item, str) and item)
    return frozenset()


@dataclass(frozen=True)
class AllowList:
    """MAILER_OIDC_ALLOWED_EMAILS (addresses and `*@domain`) and MAILER_OIDC_ALLOWED_GROUPS; either admits."""

    emails: frozenset[str]
    domains: frozenset[str]
    groups: frozenset[str]
    groups_claim: str

    @classmethod
    def parse(cls, emails: Iterable[str], groups: Iterable[str], groups_claim: str) -> AllowList:
        exact: set[str] = set()
        domains: set[str] = set()
        for entry in emails:
            entry = entry.strip().lower()
            if entry.startswith(DOMAIN_WILDCARD):
                domain = entry.removeprefix(DOMAIN_WILDCARD)
                if not domain or "@" in domain or "*" in domain:
                    raise ValueError(f"{entry!r} is no *@domain pattern")
                domains.add(domain)
            else:
                address = normalise_email(entry)
                if address is None or "*" in address:
                    raise ValueError(f"{entry!r} is no e-mail address or *@domain pattern")
                exact.add(address)
        return cls(
            frozenset(exact),
            frozenset(domains),
            frozenset(g.strip() for g in groups if g.strip()),
            groups_claim,
        )

    def admits(self, claims: Mapping[str, Any]) -> Verdict:
        email = normalise_email(claims.get("email"))
        if email is not None and (email in self.emails or email.rpartition("@")[2] in self.domains):
            if email_is_verified(claims):
                return Verdict(True, "allowed e-mail")
            email_refused = "the e-mail address is not verified by the provider"
        else:
            email_refused = "the e-mail address is not allowed" if email else "no e-mail address"
        shared = claim_groups(claims, self.groups_claim) & self.groups
        if shared:
            return Verdict(True, f"allowed group {min(shared)}")
        if self.groups:
            return Verdict(False, f"{email_refused}, and no allowed group in claim {self.groups_claim!r}")
        return Verdict(False, email_refused)
