"""The supervisor: owns every long-lived task of the engine, restarts a crashed one with backoff."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from mailer.domain.retry import backoff_ceiling_s

log = structlog.get_logger(__name__)

# Restart delays double from the first to the cap: a crash loop (a bug, a database that is down) costs a
# log line every 30 s at worst, while a one-off crash is retried almost at once.
RESTART_BASE_S = 0.1
RESTART_CAP_S = 30.0
# A child that ran this long before crashing is considered healthy again: its next crash restarts quickly.
HEALTHY_RUN_S = 60.0

ChildFactory = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class _Child:
    name: str
    factory: ChildFactory
    task: asyncio.Task[None] | None = None
    crashes: int = 0
    # Set while the child waits to be restarted after a crash: /readyz reports it as down.
    down_since: float | None = None
    last_error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Runs named children; a child that returns is done, one that raises is logged and restarted.

    Exceptions are never lost: each crash is logged with its traceback and counted. `stop` waits for the
    children to finish (the caller has asked them to drain) for a grace period, then cancels the rest.
    """

    def __init__(
        self,
        *,
        restart_base_s: float = RESTART_BASE_S,
        restart_cap_s: float = RESTART_CAP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._children: dict[str, _Child] = {}
        self._restart_base_s = restart_base_s
        self._restart_cap_s = restart_cap_s
        self._clock = clock
        self._closing = False

    def spawn(self, name: str, factory: ChildFactory) -> None:
        """Start a child under `name`; refused (loudly) when one of that name runs or the supervisor stops."""
        if self._closing:
            raise RuntimeError(f"supervisor is stopping; cannot start {name!r}")
        if name in self._children:
            raise RuntimeError(f"a child named {name!r} is already supervised")
        child = _Child(name, factory)
        self._children[name] = child
        # A fresh context: a child spawned while serving an API request (a mailout actor) must not carry that
        # request's `request_id` and `user` into every line it logs for the rest of its life.
        child.task = asyncio.create_task(
            self._keep(child), name=f"supervised:{name}", context=contextvars.Context()
        )

    def is_running(self, name: str) -> bool:
        return name in self._children

    def names(self) -> list[str]:
        return sorted(self._children)

    def down(self) -> dict[str, str]:
        """Children waiting to be restarted after a crash, with their last error."""
        return {
            c.name: c.last_error or "crashed" for c in self._children.values() if c.down_since is not None
        }

    def crashes(self, name: str) -> int:
        child = self._children.get(name)
        return child.crashes if child is not None else 0

    async def health_check(self) -> str | None:
        """The readiness check: None when every child runs, else which are down and why."""
        down = self.down()
        if not down:
            return None
        return "down: " + "; ".join(f"{name} ({error})" for name, error in sorted(down.items()))

    async def wait(self, name: str) -> None:
        """Until the child of that name has finished (returned or been cancelled)."""
        child = self._children.get(name)
        if child is not None:
            await child.done.wait()

    async def cancel(self, name: str) -> None:
        """Cancel one child now and wait until it is gone."""
        child = self._children.get(name)
        if child is None or child.task is None:
            return
        child.task.cancel()
        await asyncio.wait({child.task})

    async def stop(self, grace_s: float, names: list[str] | None = None) -> None:
        """Wait up to `grace_s` for the children (all, or those named) to finish, then cancel what is left."""
        if names is None:
            self._closing = True
        targets = [c for c in self._children.values() if names is None or c.name in names]
        tasks = {c.task for c in targets if c.task is not None}
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace_s) if grace_s > 0 else (set(), tasks)
        for task in late:
            task.cancel()
        if late and grace_s > 0:
            log.warning(
                "engine tasks cancelled after the grace period", tasks=sorted(t.get_name() for t in late)
            )
        if late:
            await asyncio.wait(late)

    async def _keep(self, child: _Child) -> None:
        failures = 0
        try:
            while True:
                started_s = self._clock()
                try:
                    await child.factory()
                    return
                except Exception as exc:
                    child.crashes += 1
                    child.last_error = f"{type(exc).__name__}: {exc}"[:200]
                    child.down_since = self._clock()
                    if self._clock() - started_s >= HEALTHY_RUN_S:
                        failures = 0
                    failures += 1
                    delay_s = backoff_ceiling_s(failures, self._restart_base_s, self._restart_cap_s)
                    log.exception("engine task crashed; restarting", task=child.name, restart_in_s=delay_s)
                await asyncio.sleep(delay_s)
                child.down_since = None
                log.info("engine task restarting", task=child.name, crashes=child.crashes)
        finally:
            self._children.pop(child.name, None)
            child.done.set()
