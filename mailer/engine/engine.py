"""The engine facade: builds the actors, starts them under the supervisor, and implements EnginePort."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from mailer.domain.breaker import BreakerState, CircuitBreaker
from mailer.domain.clock import Clock, utc_now
from mailer.domain.retry import RetryPolicy
from mailer.domain.sending import MessageOutcome
from mailer.domain.statuses import MessageStatus
from mailer.engine.attempt import SendClient, SenderConfig
from mailer.engine.leases import LeaseKeeper, LeaseStore
from mailer.engine.mailout_actor import MailoutActor, MailoutStore
from mailer.engine.recorder import Recorder
from mailer.engine.scheduler import ScanStore, Scheduler
from mailer.engine.sender import SenderPool
from mailer.engine.supervisor import Supervisor
from mailer.engine.wakeups import NotifyStore, PgWakeups
from mailer.observability import metrics
from mailer.observability.health import Health
from mailer.settings import Settings
from mailer.store.leasing import LeaseRecovery

log = structlog.get_logger(__name__)

HEALTH_CHECK = "engine"
AUTH_ALARM = "provider_auth"
# Stuck `sending` rows are looked for twice per lease: a crashed process's messages wait at most 1.5 leases.
LEASE_CHECKS_PER_LEASE = 2
_ACTOR_PREFIX = "mailout-"
_SENDER_PREFIX = "sender-"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The settings the engine reads, gathered once."""

    sender: SenderConfig
    claim_batch: int
    lease_s: float
    shutdown_grace_s: float
    breaker_consecutive_failures: int
    breaker_failure_ratio: float
    breaker_window: int
    breaker_cooldown_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        return cls(
            sender=SenderConfig(
                concurrency=settings.send_concurrency,
                timeout_s=settings.send_timeout_s,
                rate_per_s=settings.send_rate_per_s,
                retry=RetryPolicy(
                    settings.retry_base_s,
                    max(settings.retry_cap_s, settings.retry_base_s),
                    settings.retry_max_attempts,
                ),
                breaker_cooldown_s=settings.breaker_cooldown_s,
                # One probe per breaker cooldown: the same "give the provider a moment" knob.
                auth_probe_interval_s=settings.breaker_cooldown_s,
            ),
            claim_batch=settings.claim_batch,
            lease_s=settings.lease_s,
            shutdown_grace_s=settings.shutdown_grace_s,
            breaker_consecutive_failures=settings.breaker_consecutive_failures,
            breaker_failure_ratio=settings.breaker_failure_ratio,
            breaker_window=settings.breaker_window,
            breaker_cooldown_s=settings.breaker_cooldown_s,
        )


class EngineStore(ScanStore, MailoutStore, LeaseStore, NotifyStore, Protocol):
    """All the engine's actors need of the store, and the recorder's batch write and lease recovery."""

    async def record(self, outcomes: Sequence[MessageOutcome], now: datetime) -> None: ...

    async def recover_leases(self, now: datetime) -> LeaseRecovery: ...


class Engine:
    """The sending engine of one process; `mailout_changed` and `stop_mailout` are its EnginePort."""

    def __init__(
        self,
        store: EngineStore,
        client: SendClient,
        config: EngineConfig,
        health: Health,
        *,
        pg_dsn: str | None = None,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._health = health
        self._clock = clock
        self.supervisor = Supervisor()
        self.recorder = Recorder(store.record, clock, self._outcomes_written)
        self.breaker = CircuitBreaker(
            config.breaker_consecutive_failures,
            config.breaker_failure_ratio,
            config.breaker_window,
            config.breaker_cooldown_s,
            time.monotonic,
            on_change=self._breaker_changed,
        )
        self.pool = SenderPool(
            client,
            self.recorder,
            self.breaker,
            config.sender,
            on_auth_pause=self._auth_paused,
            on_auth_resume=self._auth_resumed,
            clock=clock,
            rng=rng,
        )
        self.scheduler = Scheduler(store, self._ensure_actor, clock=clock)
        self._actors: dict[int, MailoutActor] = {}
        self._wakeups = PgWakeups(pg_dsn, store, self._wake_local) if pg_dsn else None
        self._started = False
        self._stopping = False
        self._unwatch: list[metrics.Unwatch] = []

    # --- EnginePort ----------------------------------------------------------------------------------------

    def mailout_changed(self, mailout_id: int) -> None:
        """Wake the scheduler and the mailout's actor here, and (PostgreSQL) every other process."""
        if self._started and not self._stopping:
            # Straight to the actor, without waiting for a scan: a mailout due now starts within milliseconds.
            # An actor for a mailout that is not due (or gone) sleeps until its start (or ends at once).
            self._ensure_actor(mailout_id)
        self._wake_local(mailout_id)
        if self._wakeups is not None:
            self._wakeups.publish(mailout_id)

    async def stop_mailout(self, mailout_id: int) -> None:
        """Cut the mailout's requests in flight, drop its queued jobs, and wait until all is recorded."""
        log.info("stopping mailout", mailout_id=mailout_id, in_flight=self.pool.in_flight(mailout_id))
        await self.pool.stop_mailout(mailout_id)
        await self.recorder.flush()
        self.mailout_changed(mailout_id)

    # --- life cycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every actor, in dependency order: recorder, senders, leases, wake-ups, scheduler."""
        if self._started:
            raise RuntimeError("engine already started")
        self._started = True
        self._health.add_check(HEALTH_CHECK, self.supervisor.health_check)
        spawn = self.supervisor.spawn
        spawn("recorder", self.recorder.run)
        for index in range(self._config.sender.concurrency):
            spawn(f"{_SENDER_PREFIX}{index}", self.pool.run_worker)
        spawn("leases", self._recover_leases)
        keeper = LeaseKeeper(self._store, self.pool.held_ids, self._config.lease_s, clock=self._clock)
        spawn("lease-keeper", keeper.run)
        if self._wakeups is not None:
            spawn("notify", self._wakeups.run_publisher)
            spawn("listen", self._wakeups.run_listener)
        spawn("scheduler", self.scheduler.run)
        # Read when Prometheus scrapes: exact, with no bookkeeping on the sending paths.
        self._unwatch = [
            metrics.watch(metrics.SENDER_QUEUE_DEPTH, self.pool.queue_depth),
            metrics.watch(metrics.SENDER_IN_FLIGHT, self.pool.in_flight),
            metrics.watch(
                metrics.RUNNING_MAILOUTS, lambda: sum(a.running for a in list(self._actors.values()))
            ),
        ]
        metrics.set_breaker_state(self.breaker.state)
        log.info("engine started", senders=self._config.sender.concurrency)

    async def stop(self) -> None:
        """Stop claiming, let requests in flight finish within the grace period, cut the rest, record all."""
        self._stopping = True
        grace_s = self._config.shutdown_grace_s
        supervisor = self.supervisor
        for name in ("scheduler", "listen", "notify"):
            await supervisor.cancel(name)
        # Actors only claim and wait: cancelling them is safe (a half-queued batch is given back).
        actors = [name for name in supervisor.names() if name.startswith(_ACTOR_PREFIX)]
        await asyncio.gather(*(supervisor.cancel(name) for name in actors))
        await self.pool.drain(grace_s)
        senders = [name for name in supervisor.names() if name.startswith(_SENDER_PREFIX)]
        await supervisor.stop(grace_s, senders)
        await self.recorder.flush()
        await supervisor.stop(0)
        for unwatch in self._unwatch:
            unwatch()
        self._unwatch = []
        log.info("engine stopped")

    # --- internals -----------------------------------------------------------------------------------------

    def _wake_local(self, mailout_id: int | None) -> None:
        self.scheduler.wake()
        if mailout_id is None:
            for actor in self._actors.values():
                actor.wake()
        elif (one := self._actors.get(mailout_id)) is not None:
            one.wake()

    def _ensure_actor(self, mailout_id: int) -> None:
        name = f"{_ACTOR_PREFIX}{mailout_id}"
        if self.supervisor.is_running(name):
            return
        actor = MailoutActor(
            mailout_id,
            self._store,
            self.pool,
            self.recorder,
            claim_batch=self._config.claim_batch,
            lease_s=self._config.lease_s,
            clock=self._clock,
        )
        self._actors[mailout_id] = actor

        async def run() -> None:
            await actor.run()
            # Finished normally (a crash restarts `run` under the supervisor and keeps the actor).
            if self._actors.get(mailout_id) is actor:
                del self._actors[mailout_id]

        self.supervisor.spawn(name, run)

    async def _recover_leases(self) -> None:
        interval_s = self._config.lease_s / LEASE_CHECKS_PER_LEASE
        while True:
            recovered = await self._store.recover_leases(self._clock())
            if recovered.total:
                metrics.message_transition(MessageStatus.PENDING, recovered.pending)
                metrics.message_transition(MessageStatus.EXPIRED, recovered.expired)
                metrics.message_transition(MessageStatus.CANCELLED, recovered.cancelled)
                log.warning(
                    "leases.recovered",
                    pending=recovered.pending,
                    expired=recovered.expired,
                    cancelled=recovered.cancelled,
                )
                self._wake_local(None)
            await asyncio.sleep(interval_s)

    def _outcomes_written(self, outcomes: Sequence[MessageOutcome]) -> None:
        # A retry has a new due time, and a final state may be the mailout's last: its actor looks again.
        for mailout_id in {o.mailout_id for o in outcomes}:
            if (actor := self._actors.get(mailout_id)) is not None:
                actor.nudge()

    def _breaker_changed(self, old: BreakerState, new: BreakerState) -> None:
        metrics.set_breaker_state(new)
        if new is BreakerState.OPEN:
            log.warning("breaker.changed", previous=old.value, state=new.value)
        else:
            log.info("breaker.changed", previous=old.value, state=new.value)

    def _auth_paused(self, reason: str) -> None:
        self._health.raise_alarm(AUTH_ALARM, f"the provider refuses the token: {reason}")
        log.error("the provider refuses our token: sending paused until a probe succeeds", reason=reason)

    def _auth_resumed(self) -> None:
        self._health.clear_alarm(AUTH_ALARM)
        log.info("the provider accepts our token again: sending resumed")
        self._wake_local(None)
