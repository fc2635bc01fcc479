"""MAILER_UVLOOP picks the event loop the service runs on: uvloop by default, asyncio's own when false."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop

from mailer.cli import new_event_loop
from mailer.settings import Settings


def test_uvloop_by_default_and_asyncio_when_turned_off(settings_factory: Callable[..., Settings]) -> None:
    assert settings_factory().uvloop is True
    for use_uvloop, expected in ((True, uvloop.Loop), (False, asyncio.SelectorEventLoop)):
        loop = new_event_loop(use_uvloop)
        try:
            assert type(loop) is expected
            assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
        finally:
            loop.close()


def test_the_variable_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_UVLOOP", "false")
    assert Settings().uvloop is False
