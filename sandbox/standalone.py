"""The sandbox as its own server (`python -m mailer sandbox`): a socket that can refuse for a while."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiohttp import web

from sandbox.app import create_sandbox_app
from sandbox.control import control_token_guard
from sandbox.faults import FLOAT_FIELDS, SandboxFaults
from sandbox.state import SANDBOX_STATE

DEFAULT_PORT = 8081
# How long a standalone shutdown waits for handlers still running (latency sleeps) before cancelling them.
SHUTDOWN_GRACE_S = 2.0


class _Listener:
    """The listening socket: it can close for a while and come back on the same port."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self._host = host
        self._port = port
        self._site: web.TCPSite | None = None
        self._reopening: asyncio.Task[None] | None = None
        # A failure of the reopening task ends run_standalone: no background failure is dropped.
        self.failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def open(self) -> int:
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self._site = site
        self._port = site.port  # with port 0, come back on the port the system chose
        return self._port

    async def refuse(self, seconds: float) -> None:
        """Refuse connections for `seconds` from now (a new call replaces the window)."""
        await self._cancel_reopening()
        if self._site is not None:
            await self._site.stop()
            self._site = None
            server = self._runner.server
            if server is not None:
                # Keep-alive connections would otherwise go on being served; each closes after its answer.
                for connection in server.connections:
                    connection.close()
        self._reopening = asyncio.create_task(self._reopen_after(seconds), name="sandbox-reopen")

    async def _reopen_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # a timer, not synchronisation: the window is the point
        try:
            await self.open()
        except OSError as exc:
            if not self.failure.done():
                self.failure.set_exception(exc)

    async def _cancel_reopening(self) -> None:
        if self._reopening is not None:
            self._reopening.cancel()
            await asyncio.wait([self._reopening])  # waits without re-raising its cancellation
            self._reopening = None

    async def close(self) -> None:
        await self._cancel_reopening()
        if not self.failure.done():
            self.failure.cancel()


async def run_standalone(
    host: str, port: int, faults: SandboxFaults, token: str | None, control_token: str | None = None
) -> None:
    """Serve the sandbox on host:port until cancelled; POST /_control/refuse works here.

    The control API needs `control_token` when one is given; without, it is open to whoever reaches the
    port, which is why the default host is loopback.
    """
    guard = control_token_guard(control_token) if control_token is not None else None
    app = create_sandbox_app(faults, token, control_guard=guard)
    runner = web.AppRunner(
        app,
        access_log=None,  # a benchmark's 100,000 requests would spend more time logging than answering
        handler_cancellation=True,  # a client that gives up (hang, latency) frees its handler at once
        shutdown_timeout=SHUTDOWN_GRACE_S,
    )
    await runner.setup()
    listener = _Listener(runner, host, port)
    try:
        bound_port = await listener.open()
        app[SANDBOX_STATE].refuser = listener.refuse
        print(f"sandbox listening on http://{_url_host(host)}:{bound_port}", flush=True)
        if faults.refuse_for_s > 0:
            await listener.refuse(faults.refuse_for_s)
        await listener.failure
    finally:
        await listener.close()
        await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    """Command line: run the sandbox standalone until SIGINT or SIGTERM."""
    defaults = SandboxFaults()
    parser = argparse.ArgumentParser(prog="mailer sandbox", description="mailer's fake send-API provider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on /send")
    parser.add_argument(
        "--control-token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' on the /_control/ API (open without: keep --host local)",
    )
    for name in sorted(FLOAT_FIELDS):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=float, default=getattr(defaults, name), dest=name)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    faults = SandboxFaults(**{name: getattr(args, name) for name in (*FLOAT_FIELDS, "seed")})
    try:
        faults.validate()
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve_until_signal(args.host, args.port, faults, args.token, args.control_token))
    except OSError as exc:  # for example, the port is taken
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve_until_signal(
    host: str, port: int, faults: SandboxFaults, token: str | None, control_token: str | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    serving = asyncio.create_task(run_standalone(host, port, faults, token, control_token), name="sandbox")
    stopping = asyncio.create_task(stop.wait(), name="sandbox-stop")
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        stopping.cancel()
        serving.cancel()
        await asyncio.wait({serving, stopping})
    if not serving.cancelled():
        serving.result()  # surfaces a failure, such as a port in use
