"""Bodies of the routes outside /api: the index, liveness, readiness, and the access token."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mailer import __version__

PROVIDER_DESCRIPTION = (
    "`sandbox` while the built-in sandbox provider is in use (nothing reaches a phone), else the host "
    "of MAILER_PROVIDER_URL"
)


class IndexOut(BaseModel):
    """What this service is, which provider it sends through, and where to go."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "service": "mailer",
                    "version": __version__,
                    "provider": "sandbox",
                    "links": {"docs": "/docs/", "openapi": "/openapi.json", "token": "/auth/token"},
                }
            ]
        }
    )

    service: Literal["mailer"]
    version: str
    provider: str = Field(description=PROVIDER_DESCRIPTION)
    links: dict[str, str] = Field(description="the main routes, by name")


class HealthOut(BaseModel):
    """The process lives."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"]


class ReadyOut(BaseModel):
    """Readiness, with each component's state."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ready", "provider": "sandbox", "checks": {"database": "ok"}},
                {
                    "status": "unavailable",
                    "provider": "api.example.com",
                    "checks": {"database": "TimeoutError"},
                },
            ]
        }
    )

    status: Literal["ready", "unavailable"]
    provider: str = Field(description=PROVIDER_DESCRIPTION)
    checks: dict[str, str] = Field(
        description="each component: `ok` or the kind of failure; alarms appear as `alarm:NAME`"
    )


class TokenForm(BaseModel):
    """The OAuth2 password grant, as Swagger UI's *Authorize* sends it."""

    grant_type: Literal["password"] | None = Field(None, description="OAuth2: `password` when given")
    username: str
    password: str = Field(json_schema_extra={"format": "password"})


class TokenJson(BaseModel):
    """The administrator's credentials as a JSON object."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"username": "admin", "password": "s3cret-pass"}]}
    )

    username: str
    password: str = Field(json_schema_extra={"format": "password"})


class Token(BaseModel):
    """An access token: send it as `Authorization: Bearer <access_token>`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl",
                    "token_type": "bearer",
                    "expires_in": 3600,
                }
            ]
        }
    )

    access_token: str = Field(description="a JWT")
    token_type: Literal["bearer"]
    expires_in: int = Field(description="seconds until the token expires")
