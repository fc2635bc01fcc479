"""Delivery of the report over SMTP with aiosmtplib: server, credentials and TLS mode from the settings."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib
from prometheus_async import aio

from mailer.observability import metrics
from mailer.settings import Settings


async def send_email(message: EmailMessage, settings: Settings) -> None:
    """Hand `message` to the configured SMTP server; raises `aiosmtplib.SMTPException`, `OSError` or
    `TimeoutError` when it is not accepted for every recipient."""
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    sending = aiosmtplib.send(
        message,
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=password if settings.smtp_username else None,
        use_tls=settings.smtp_tls == "tls",
        # False, not None: "none" must never upgrade on its own, and "tls" is encrypted from the first byte.
        start_tls=settings.smtp_tls == "starttls",
        timeout=settings.smtp_timeout_s,
    )
    _errors, _reply = await aio.time(metrics.SMTP_LATENCY, sending)
