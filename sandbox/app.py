"""create_sandbox_app: the sandbox as an aiohttp app, to mount or to serve."""

from __future__ import annotations

from aiohttp import web

from sandbox.control import ControlGuard, add_control_routes, guarded_control
from sandbox.faults import SandboxFaults
from sandbox.send import handle_send
from sandbox.state import COUNTS_SIZE, SANDBOX_STATE, SandboxState

# Enough for a benchmark's whole mailout; each entry is a few dozen bytes (the text is shared).
DEFAULT_JOURNAL_SIZE = 100_000


def create_sandbox_app(
    faults: SandboxFaults | None = None,
    token: str | None = None,
    journal_size: int = DEFAULT_JOURNAL_SIZE,
    *,
    counts_size: int = COUNTS_SIZE,
    control_guard: ControlGuard | None = None,
) -> web.Application:
    """The sandbox as an aiohttp app: POST /send/{msgId} and the /_control/ API.

    The control API shows every phone and text received and changes the faults: `control_guard`, when
    given, is called with each of its requests and refuses one by raising. The service passes its own
    token check; `control_token_guard` is the standalone sandbox's. Deliveries are counted for the last
    `counts_size` message ids, the journal keeps the last `journal_size` requests.
    """
    faults = faults if faults is not None else SandboxFaults()
    faults.validate()
    if journal_size < 0:
        raise ValueError("journal_size must be >= 0")
    middlewares = [guarded_control(control_guard)] if control_guard is not None else []
    app = web.Application(middlewares=middlewares)
    app[SANDBOX_STATE] = SandboxState(faults, token, journal_size, counts_size)
    app.router.add_post("/send/{msgId}", handle_send)
    add_control_routes(app)
    app.on_shutdown.append(_release_hanging)
    return app


async def _release_hanging(app: web.Application) -> None:
    app[SANDBOX_STATE].released.set()
