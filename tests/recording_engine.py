"""A stand-in for the sending engine that remembers what the operations asked of it."""

from __future__ import annotations


class RecordingEngine:
    """An `EnginePort` recording each wake-up and stop, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def mailout_changed(self, mailout_id: int) -> None:
        self.calls.append(("changed", mailout_id))

    async def stop_mailout(self, mailout_id: int) -> None:
        self.calls.append(("stop", mailout_id))

    def take(self) -> list[tuple[str, int]]:
        """The calls since the last take."""
        calls, self.calls = self.calls, []
        return calls
