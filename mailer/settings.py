"""Settings from MAILER_* environment variables, with embedded defaults; read once, at the entry point."""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./mailer.db"
_CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class Settings(BaseSettings):
    """Everything configurable; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="MAILER_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: int = Field(10, ge=1, le=1000)

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

    admin_username: str = "admin"
    admin_password: SecretStr | None = None
    jwt_secret: SecretStr | None = None
    token_lifetime_s: int = Field(3600, ge=60)
    login_attempts_per_minute: int = Field(10, ge=1)

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
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @field_validator("report_recipients", mode="before")
    @classmethod
    def _address_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
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
    def _report_addresses(self) -> Settings:
        if self.report_enabled and (not self.report_recipients or not self.report_sender):
            raise ValueError("report_enabled needs report_recipients and report_sender")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def generate_secret() -> str:
    return secrets.token_urlsafe(24)
