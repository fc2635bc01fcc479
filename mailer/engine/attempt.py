"""One send attempt of one job: the checks since the claim, the request with its deadline, the outcome.

The checks: a hold on the mailout, its end, the customer's window, a paused provider token, the breaker and
the rate limit. The deadline is the earliest of the timeout, the end and the window closing; a request cut at
a boundary is an outcome (rescheduled, expired), not an error.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import structlog

from mailer.domain.auth_gate import AuthGate
from mailer.domain.breaker import CircuitBreaker
from mailer.domain.clock import Clock
from mailer.domain.ratelimit import TokenBucket
from mailer.domain.retry import RetryPolicy, next_attempt_at
from mailer.domain.sending import AttemptRow, MailoutPlan, MessageOutcome
from mailer.domain.statuses import MessageStatus, Outcome
from mailer.domain.windows import OpenSpans, load_zone, next_open
from mailer.engine.jobs import CutReason, SendJob
from mailer.engine.outcomes import attempt_row, outcome_of, rescheduled
from mailer.observability import metrics
from mailer.provider.client import SendResult

log = structlog.get_logger(__name__)

# Jitter added to a breaker give-back, as a share of the delay: the messages of an outage come back spread out
# instead of all at the instant the breaker half-opens.
BREAKER_JITTER_SHARE = 0.2
# While half-open only the probe goes; the others come back after this share of the cooldown, by when the
# probe has usually answered.
HALF_OPEN_RETRY_SHARE = 0.1
# The token bucket lets this many seconds' worth of sends go at once (at least one).
RATE_BURST_S = 0.1


class SendClient(Protocol):
    """The one provider call the pool needs, and the URL it goes to (for the log; never holds a secret)."""

    def url_for(self, msg_id: int) -> str: ...

    async def send(self, msg_id: int, phone: str, text: str, timeout_s: float) -> SendResult:
        """Answers within `timeout_s` (TIMEOUT when the provider does not): the attempt's deadline."""
        ...


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """The pool's knobs, from settings."""

    concurrency: int
    timeout_s: float
    rate_per_s: float
    retry: RetryPolicy
    breaker_cooldown_s: float
    auth_probe_interval_s: float


class Attempter:
    """Runs the attempts of the pool's workers against one provider client, breaker, auth gate and rate."""

    def __init__(
        self,
        client: SendClient,
        breaker: CircuitBreaker,
        auth: AuthGate,
        config: SenderConfig,
        *,
        clock: Clock,
        monotonic: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._client = client
        self._breaker = breaker
        self._auth = auth
        self._config = config
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng
        self._timeout = timedelta(seconds=config.timeout_s)
        # Each message asks whether its window is open and when it closes: the same answers for a day.
        self._spans = OpenSpans()
        # Logging is configured before the engine starts; DEBUG lines cost nothing when it is off.
        self._debug = log.is_enabled_for(logging.DEBUG)
        self._bucket = (
            TokenBucket(config.rate_per_s, max(1.0, config.rate_per_s * RATE_BURST_S), monotonic)
            if config.rate_per_s > 0
            else None
        )

    async def run(self, job: SendJob) -> MessageOutcome:
        """Check what changed since the claim, send with a deadline, and judge the answer."""
        live = job.mailout
        plan = live.plan
        zone = load_zone(job.message.timezone)
        now = self._clock()
        if live.hold is not None:
            return outcome_of(job, live.hold, next_at=now)
        if now >= plan.end_at:
            return outcome_of(job, MessageStatus.EXPIRED)
        if not self._spans.is_open(now, plan.window, zone):
            return rescheduled(job, next_open(now, plan.window, zone))
        if not self._auth.try_send():
            # Not the message's fault: back to pending with no attempt; claims are paused meanwhile.
            return outcome_of(job, MessageStatus.PENDING, next_at=now)
        job.probe = self._auth.paused
        if not self._breaker.allow():
            self._auth.inconclusive(job.probe)
            return outcome_of(job, MessageStatus.PENDING, next_at=now + self._breaker_delay())
        if self._bucket is not None:
            wait_s = self._bucket.take()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            now = self._clock()
        deadline, reason = self._deadline(plan, zone, now)
        if deadline <= now:
            self._breaker.release_probe()
            self._auth.inconclusive(job.probe)
            if reason is CutReason.END:
                return outcome_of(job, MessageStatus.EXPIRED)
            return rescheduled(job, next_open(now, plan.window, zone))
        return await self._send(job, plan, deadline, reason, now)

    async def _send(
        self, job: SendJob, plan: MailoutPlan, deadline: datetime, reason: CutReason | None, now: datetime
    ) -> MessageOutcome:
        timeout_s = (deadline - now).total_seconds()
        job.started_at, job.started_s = now, self._monotonic()
        message = job.message
        if self._debug:
            # DEBUG: the state line the recorder writes after the request carries its outcome (one INFO line
            # per attempt); this one is for watching requests go out. Its values are not even built at INFO.
            log.debug(
                "provider.request",
                mailout_id=message.mailout_id,
                message_id=message.id,
                customer_id=message.customer_id,
                method="POST",
                url=self._client.url_for(message.id),
                attempt=message.attempts + 1,
                deadline=deadline.isoformat(),
                timeout_s=round(timeout_s, 3),
            )
        # The client bounds the request by `timeout_s` itself and answers TIMEOUT (it never raises for that).
        result = await self._client.send(message.id, message.phone, plan.text, timeout_s)
        if result.outcome is Outcome.TIMEOUT and reason is not None:
            # The deadline was a boundary, not the timeout: the request was cut there.
            job.cut = reason
            self._breaker.release_probe()
            self._auth.inconclusive(job.probe)
            return self.cut(job, self._clock())
        return self._judge(job, plan, result)

    def _deadline(
        self, plan: MailoutPlan, zone: ZoneInfo, now: datetime
    ) -> tuple[datetime, CutReason | None]:
        """The earliest of timeout, end and window closing; the reason is None when it is the timeout."""
        deadline: datetime = now + self._timeout
        reason: CutReason | None = None
        if plan.end_at <= deadline:
            deadline, reason = plan.end_at, CutReason.END
        closing = self._spans.closes_at(now, plan.window, zone)
        if closing is not None and closing < deadline:
            deadline, reason = closing, CutReason.WINDOW
        return deadline, reason

    def _judge(self, job: SendJob, plan: MailoutPlan, result: SendResult) -> MessageOutcome:
        now = self._clock()
        attempt = attempt_row(job, result.outcome, result.http_status, result.error, result.duration_s)
        outcome = result.outcome
        metrics.provider_request(outcome, result.duration_s)
        if self._debug:
            self._log_response(job, attempt)
        if outcome is Outcome.SENT or outcome is Outcome.REJECTED:
            self._breaker.record_success()
            self._auth.accepted()
            if outcome is Outcome.SENT:
                return outcome_of(job, MessageStatus.SENT, sent_at=now, attempt=attempt)
            return outcome_of(job, MessageStatus.FAILED, error=result.error, attempt=attempt)
        if outcome is Outcome.UNAUTHORIZED:
            self._breaker.release_probe()
            self._auth.refused(result.error or f"HTTP {result.http_status}")
            return outcome_of(job, MessageStatus.PENDING, next_at=now, error=result.error, attempt=attempt)
        # Transient: timeout, connection, 5xx, 429, garbage.
        self._breaker.record_failure()
        self._auth.inconclusive(job.probe)
        made = job.message.attempts + 1
        if made >= self._config.retry.max_attempts:
            return outcome_of(job, MessageStatus.FAILED, error=result.error, attempt=attempt)
        retry_at = next_attempt_at(
            now, made, self._config.retry, self._rng, result.retry_after_s, plan.end_at
        )
        if retry_at is None:
            return outcome_of(job, MessageStatus.EXPIRED, error=result.error, attempt=attempt)
        opens = next_open(retry_at, plan.window, load_zone(job.message.timezone))
        retried = rescheduled(job, opens, error=result.error, attempt=attempt)
        if retried.status is MessageStatus.PENDING:
            # The recorder's `message.pending` line says when the retry is due.
            metrics.RETRIES.inc()
        return retried

    @staticmethod
    def _log_response(job: SendJob, attempt: AttemptRow) -> None:
        message = job.message
        log.debug(
            "provider.response",
            mailout_id=message.mailout_id,
            message_id=message.id,
            customer_id=message.customer_id,
            outcome=attempt.outcome,
            http_status=attempt.http_status,
            duration_ms=attempt.duration_ms,
            error=attempt.error,
        )

    def cut(self, job: SendJob, now: datetime) -> MessageOutcome:
        """The outcome of a request cut in flight (or a job cut before its request started)."""
        reason = job.cut or CutReason.SHUTDOWN
        plan = job.mailout.plan
        attempt = None
        if job.started_at is not None and job.started_s is not None:
            error = f"cut: {reason.value}"
            elapsed_s = self._monotonic() - job.started_s
            attempt = attempt_row(job, Outcome.CUT, None, error, elapsed_s)
            metrics.provider_request(Outcome.CUT, elapsed_s)
            self._log_response(job, attempt)
        else:
            # No request went out: the state change the recorder logs is the whole story, plus why.
            message = job.message
            log.info(
                "send.cut",
                mailout_id=message.mailout_id,
                message_id=message.id,
                customer_id=message.customer_id,
                reason=reason.value,
            )
        match reason:
            case CutReason.CANCEL:
                return outcome_of(job, MessageStatus.CANCELLED, attempt=attempt)
            case CutReason.END:
                return outcome_of(job, MessageStatus.EXPIRED, attempt=attempt)
            case CutReason.WINDOW:
                opens = next_open(now, plan.window, load_zone(job.message.timezone))
                return rescheduled(job, opens, attempt=attempt)
            case CutReason.SHUTDOWN:
                return outcome_of(job, MessageStatus.PENDING, next_at=now, attempt=attempt)

    def _breaker_delay(self) -> timedelta:
        delay_s = self._breaker.reopens_in_s() or self._config.breaker_cooldown_s * HALF_OPEN_RETRY_SHARE
        return timedelta(seconds=delay_s * (1 + self._rng.uniform(0, BREAKER_JITTER_SHARE)))
