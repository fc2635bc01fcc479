"""Settings from MAILER_* environment variables, with embedded defaults; read once, at the entry point."""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./mailer.db"
# MAILER_PROVIDER_URL's explicit name for the built-in sandbox provider (the default when it is unset).
SANDBOX_PROVIDER_URL = "sandbox"
_CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
# An allow-list entry: one address (local@domain) or every address of one domain (*@domain).
_ADDRESS_PATTERN = re.compile(r"^(\*|[^@\s*]+)@[^@\s*]+$")
# HS256 keys shorter than the hash output (32 bytes) are below what RFC 7518 section 3.2 requires, and the
# session cookie key is derived the same way; anything shorter is guessable offline from one token.
MIN_SECRET_BYTES = 32
# A password typed by a person: long enough that the login rate limit makes guessing hopeless.
MIN_PASSWORD_CHARS = 12
# A value with fewer distinct characters than this ("xxxx…", "abababab…") is a placeholder, not a secret.
MIN_DISTINCT_CHARS = 8
# Values copied from examples, compared lower-cased with separators removed: whole words, and prefixes
# that only an example starts with ("change-me-to-32-random-bytes").
PLACEHOLDERS = frozenset({"changeme", "replaceme", "secret", "password", "example", "default", "todo"})
PLACEHOLDER_PREFIXES = ("changeme", "replaceme", "yoursecret", "insert")


class Settings(BaseSettings):
    """Everything configurable; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="MAILER_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    header_timeout_s: float = Field(
        15.0, gt=0, le=3600, description="a connection must send its request's headers within this"
    )
    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: int = Field(10, ge=1, le=1000)
    uvloop: bool = Field(True, description="run on uvloop (faster I/O); false: asyncio's own event loop")

    provider_url: str | None = None
    provider_token: SecretStr | None = None
    send_concurrency: int = Field(64, ge=1, le=10_000)
    send_timeout_s: float = Field(10.0, gt=0, le=3600)
    send_rate_per_s: float = Field(0.0, ge=0, description="token-bucket cap on sends per second; 0 = none")
    retry_base_s: float = Field(1.0, gt=0)
    retry_cap_s: float = Field(60.0, gt=0)
    retry_max_attempts: int = Field(20, ge=1)
    breaker_consecutive_failures: int = Field(20, ge=1)
    breaker_failure_ratio: float = Field(0.9, gt=0, le=1)
    breaker_window: int = Field(50, ge=1)
    breaker_cooldown_s: float = Field(5.0, gt=0)
    claim_batch: int = Field(500, ge=1, le=100_000)
    lease_s: float = Field(60.0, gt=0)
    shutdown_grace_s: float = Field(10.0, ge=0)

    env: Literal["development", "production"] = "development"

    admin_username: str = "admin"
    admin_password: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    session_secret: SecretStr | None = None
    token_lifetime_s: int = Field(3600, ge=60)
    login_attempts_per_minute: int = Field(10, ge=1)
    trusted_proxies: int = Field(
        0, ge=0, le=16, description="proxy hops in front whose X-Forwarded-For entries are trusted"
    )

    # The admin UI's sign-in (docs/admin_auth.md): OpenID Connect, the bootstrap administrator, or both.
    public_url: str | None = Field(None, description="how people reach the service; default http://HOST:PORT")
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_allowed_emails: Annotated[list[str], NoDecode] = Field(default_factory=list)
    oidc_allowed_groups: Annotated[list[str], NoDecode] = Field(default_factory=list)
    oidc_groups_claim: str = Field("groups", min_length=1)
    admin_local_login: bool = True
    admin_session_lifetime_s: int = Field(12 * 3600, ge=60, le=7 * 24 * 3600)

    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    import_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)

    sandbox_latency_ms: float = Field(0.0, ge=0, description="mean latency of the built-in sandbox")
    sandbox_error_rate: float = Field(0.0, ge=0, le=1, description="share of 5xx answers")
    sandbox_throttle_rate: float = Field(0.0, ge=0, le=1, description="share of 429 answers")
    sandbox_garbage_rate: float = Field(0.0, ge=0, le=1, description="share of 200s with a bad body")
    sandbox_hang_rate: float = Field(0.0, ge=0, le=1, description="share of requests that never answer")
    sandbox_token: SecretStr | None = None

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_file: str | None = None

    report_enabled: bool = Field(False, description="send the daily statistics e-mail")
    report_recipients: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated addresses of the daily report"
    )
    report_sender: str | None = Field(None, description="the From address of the daily report")
    report_time: str = Field("08:00", description="local time of day (HH:MM) at which the report is sent")
    report_timezone: str = Field("UTC", description="IANA zone of report_time and of the times in the report")
    smtp_host: str = "localhost"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_timeout_s: float = Field(30.0, gt=0, le=600)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(
            ("sqlite:", "sqlite+aiosqlite:", "postgresql:", "postgres:", "postgresql+asyncpg:")
        ):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @field_validator("provider_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value == SANDBOX_PROVIDER_URL:
            # The explicit spelling of the default: the built-in sandbox (None everywhere after).
            return None
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @field_validator("jwt_secret", "session_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            weakness = secret_weakness(value.get_secret_value(), MIN_SECRET_BYTES)
            if weakness:
                raise ValueError(f"{weakness}; generate one with: openssl rand -base64 32")
        return value

    @field_validator("admin_password")
    @classmethod
    def _strong_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            weakness = password_weakness(value.get_secret_value())
            if weakness:
                raise ValueError(f"{weakness}; unset it to get a random one printed at start")
        return value

    @field_validator("report_recipients", mode="before")
    @classmethod
    def _address_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("oidc_allowed_emails", "oidc_allowed_groups", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("oidc_allowed_emails")
    @classmethod
    def _address_patterns(cls, value: list[str]) -> list[str]:
        bad = [entry for entry in value if not _ADDRESS_PATTERN.match(entry)]
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))}: not an e-mail address or a *@domain pattern")
        return [entry.lower() for entry in value]

    @field_validator("public_url", "oidc_issuer")
    @classmethod
    def _web_address(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        # The issuer stays as given: it must equal the ID token's `iss` exactly (Auth0's ends with a slash).
        return value

    @field_validator("report_time")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        if not _CLOCK_TIME.match(value):
            raise ValueError("must be a local time of day as HH:MM, for example 08:00")
        return value

    @field_validator("report_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Moscow") from None
        return value

    @model_validator(mode="after")
    def _production_secrets(self) -> Settings:
        if self.env == "production":
            # A random per-process secret breaks every token and session at each restart and between
            # replicas: in production that is an outage, not a convenience.
            unset = [name for name, value in _SHARED_SECRETS.items() if getattr(self, value) is None]
            if unset:
                raise ValueError(f"MAILER_ENV=production needs {' and '.join(unset)} set (not random)")
        return self

    @model_validator(mode="after")
    def _production_provider(self) -> Settings:
        if self.env == "production" and self.provider_url is None:
            # The sandbox accepts every message and delivers none: in production that is silent data loss.
            raise ValueError(
                "MAILER_ENV=production needs MAILER_PROVIDER_URL set to the real provider's https:// URL "
                "(unset or `sandbox` is the built-in sandbox, which sends nothing)"
            )
        return self

    @model_validator(mode="after")
    def _admin_sign_in(self) -> Settings:
        if self.oidc_issuer and not self.oidc_client_id:
            raise ValueError("MAILER_OIDC_ISSUER needs MAILER_OIDC_CLIENT_ID (the client registered there)")
        if self.oidc_client_id and not self.oidc_issuer:
            raise ValueError("MAILER_OIDC_CLIENT_ID needs MAILER_OIDC_ISSUER (the provider's issuer URL)")
        if self.oidc_issuer and not (self.oidc_allowed_emails or self.oidc_allowed_groups):
            # Without a list every account of the issuer (every Google account, say) would be an admin.
            raise ValueError(
                "MAILER_OIDC_ISSUER needs MAILER_OIDC_ALLOWED_EMAILS or MAILER_OIDC_ALLOWED_GROUPS: "
                "who may sign in to the admin UI"
            )
        if not self.admin_local_login and not self.oidc_issuer:
            raise ValueError(
                "MAILER_ADMIN_LOCAL_LOGIN=false and no MAILER_OIDC_ISSUER: nobody could sign in to the admin "
                "UI; configure OpenID Connect or allow the local login"
            )
        return self

    @model_validator(mode="after")
    def _report_addresses(self) -> Settings:
        if self.report_enabled and (not self.report_recipients or not self.report_sender):
            raise ValueError("report_enabled needs report_recipients and report_sender")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def public_base_url(self) -> str:
        """MAILER_PUBLIC_URL without a trailing slash, or the listening address."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


_SHARED_SECRETS = {"MAILER_JWT_SECRET": "jwt_secret", "MAILER_SESSION_SECRET": "session_secret"}


def _is_placeholder(value: str) -> bool:
    folded = re.sub(r"[^a-z0-9]", "", value.lower())
    return (
        folded in PLACEHOLDERS
        or folded.startswith(PLACEHOLDER_PREFIXES)
        or len(set(value)) < MIN_DISTINCT_CHARS
    )


def secret_weakness(value: str, min_bytes: int) -> str | None:
    """Why `value` is no key to sign or encrypt with, or None when it will do."""
    if len(value.encode()) < min_bytes:
        return f"must be at least {min_bytes} bytes long"
    if _is_placeholder(value):
        return "is a placeholder (an example value), not a secret"
    return None


def password_weakness(value: str) -> str | None:
    """Why `value` is no administrator password, or None when it will do."""
    if len(value) < MIN_PASSWORD_CHARS:
        return f"must be at least {MIN_PASSWORD_CHARS} characters long"
    if _is_placeholder(value):
        return "is a placeholder (an example value), not a password"
    return None


def generate_secret() -> str:
    # 32 random bytes: as strong as the HS256 key can use, and past the MIN_SECRET_BYTES rule itself.
    return secrets.token_urlsafe(MIN_SECRET_BYTES)
