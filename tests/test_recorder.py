"""The recorder on its own, over an in-memory write: outcomes go in batches, `flush` waits for what was
submitted, a full queue blocks the submitter, and a batch that fails leaves only its bad rows unwritten."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from mailer.domain.sending import MessageOutcome
from mailer.domain.statuses import MessageStatus
from mailer.engine import recorder as recorder_module
from mailer.engine.recorder import RECORD_BATCH_MAX, RECORD_QUEUE_SIZE, Recorder

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
# Message ids the fake write refuses when they come one by one (a row deleted with its mailout meanwhile).
BAD_ID = 13


class RowGone(Exception):
    """A statement that fails on its merits (not a disconnect): never retried."""


@dataclass
class Store:
    """The recorder's write in memory: `gate` cleared holds every write; `entered` is set when one starts."""

    batches: list[list[int]] = field(default_factory=list)
    stamps: list[datetime] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    refuse_bad: bool = False
    disconnects: int = 0

    async def write(self, outcomes: Sequence[MessageOutcome], now: datetime) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.disconnects:
            self.disconnects -= 1
            raise ConnectionResetError("the database went away")
        ids = [o.message_id for o in outcomes]
        if self.refuse_bad and BAD_ID in ids:
            raise RowGone(f"message {BAD_ID} is gone")
        self.batches.append(ids)
        self.stamps.append(now)

    @property
    def written(self) -> list[int]:
        return [message_id for batch in self.batches for message_id in batch]


def outcome(message_id: int) -> MessageOutcome:
    return MessageOutcome(message_id, 1, MessageStatus.SENT, None, NOW, None, None, attempts=1)


def slot_back(into: list[int], message_id: int) -> Callable[[], None]:
    """A sender's slot coming back, noted by message id."""
    return lambda: into.append(message_id)


@dataclass
class Rig:
    store: Store
    recorder: Recorder
    batches_seen: list[list[int]]
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.recorder.run())


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store = Store()
    store.gate.set()
    seen: list[list[int]] = []
    recorder = Recorder(store.write, lambda: NOW, lambda batch: seen.append([o.message_id for o in batch]))
    rig = Rig(store, recorder, seen)
    yield rig
    store.gate.set()
    if rig.task is not None:
        rig.task.cancel()
        await asyncio.wait([rig.task])


async def test_outcomes_waiting_together_are_written_in_one_batch_stamped_by_the_clock(rig: Rig) -> None:
    for message_id in range(1, 11):
        await rig.recorder.submit(outcome(message_id))
    rig.start()
    await rig.recorder.flush()
    assert rig.store.batches == [list(range(1, 11))]
    assert rig.store.stamps == [NOW]
    assert rig.batches_seen == [list(range(1, 11))], "actors hear of each written batch once"
    assert rig.recorder.unwritten_ids() == []


async def test_a_batch_never_holds_more_than_the_batch_maximum(rig: Rig) -> None:
    total = RECORD_BATCH_MAX + 7
    for message_id in range(total):
        await rig.recorder.submit(outcome(message_id))
    rig.start()
    await rig.recorder.flush()
    assert [len(batch) for batch in rig.store.batches] == [RECORD_BATCH_MAX, 7]
    assert rig.store.written == list(range(total))


async def test_flush_waits_for_the_write_and_the_outcomes_stay_unwritten_until_then(rig: Rig) -> None:
    rig.store.gate.clear()
    slots_back: list[int] = []
    rig.start()
    for message_id in (1, 2, 3):
        await rig.recorder.submit(outcome(message_id), slot_back(slots_back, message_id))
    flushing = asyncio.create_task(rig.recorder.flush())
    async with asyncio.timeout(5):
        await rig.store.entered.wait()
    # The write is stuck in the database: nothing may look written, and the leases must still be renewed.
    assert not flushing.done()
    assert sorted(rig.recorder.unwritten_ids()) == [1, 2, 3]
    assert slots_back == []
    rig.store.gate.set()
    async with asyncio.timeout(5):
        await flushing
    assert sorted(slots_back) == [1, 2, 3]
    assert rig.recorder.unwritten_ids() == []


async def test_flush_with_nothing_submitted_returns_at_once(rig: Rig) -> None:
    async with asyncio.timeout(5):
        await rig.recorder.flush()  # no run task at all: nothing to wait for
    assert rig.store.batches == []


async def test_a_full_queue_makes_the_submitter_wait_and_drops_nothing(rig: Rig) -> None:
    for message_id in range(RECORD_QUEUE_SIZE):
        await rig.recorder.submit(outcome(message_id))
    blocked = asyncio.create_task(rig.recorder.submit(outcome(RECORD_QUEUE_SIZE)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not blocked.done(), "the overflow rule is block, never drop"
    rig.start()
    async with asyncio.timeout(5):
        await blocked
        await rig.recorder.flush()
    assert sorted(rig.store.written) == list(range(RECORD_QUEUE_SIZE + 1))


async def test_a_failing_batch_is_written_row_by_row_and_only_the_bad_row_is_lost(rig: Rig) -> None:
    rig.store.refuse_bad = True
    slots_back: list[int] = []
    ids = [11, 12, BAD_ID, 14]
    for message_id in ids:
        await rig.recorder.submit(outcome(message_id), slot_back(slots_back, message_id))
    rig.start()
    async with asyncio.timeout(5):
        await rig.recorder.flush()
    assert rig.store.batches == [[11], [12], [14]]
    # The bad row stays in `sending` in the database (lease recovery returns it); here it is let go, and the
    # sender's slot comes back, so that one bad row never stalls the recorder or a sender.
    assert sorted(slots_back) == sorted(ids)
    # Actors are nudged for the whole batch: a nudge too many costs a look, one too few a stalled mailout.
    assert rig.batches_seen == [ids]
    assert rig.recorder.unwritten_ids() == []
    # The recorder goes on after the failure.
    await rig.recorder.submit(outcome(15))
    async with asyncio.timeout(5):
        await rig.recorder.flush()
    assert rig.store.batches[-1] == [15]


async def test_a_lost_connection_is_ridden_out_and_the_batch_stays_whole(rig: Rig) -> None:
    rig.store.disconnects = 2
    for message_id in (1, 2, 3):
        await rig.recorder.submit(outcome(message_id))
    rig.start()
    async with asyncio.timeout(5):
        await rig.recorder.flush()
    assert rig.store.batches == [[1, 2, 3]], "a disconnect is retried, not split into rows"
    assert rig.store.disconnects == 0


async def test_outcomes_are_given_up_only_after_the_outage_limit(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "RECORD_OUTAGE_MAX_S", 0.0)
    rig.store.disconnects = 1_000_000  # the database never comes back
    await rig.recorder.submit(outcome(1))
    rig.start()
    async with asyncio.timeout(5):
        await rig.recorder.flush()
    assert rig.store.batches == []
    assert rig.recorder.unwritten_ids() == []


async def test_a_recorder_stopped_mid_write_leaves_its_batch_unwritten_and_leased(rig: Rig) -> None:
    rig.store.gate.clear()
    slots_back: list[int] = []
    for message_id in (21, 22):
        await rig.recorder.submit(outcome(message_id), slot_back(slots_back, message_id))
    rig.start()
    async with asyncio.timeout(5):
        await rig.store.entered.wait()
    assert rig.task is not None
    rig.task.cancel()  # the process stops (or the task crashes) while the batch is in the database
    await asyncio.wait([rig.task])
    rig.task = None
    # Nothing claims to be written: the messages stay in `sending` (their leases kept while this process
    # lives), and once it is gone lease recovery returns them to pending.
    assert rig.store.batches == []
    assert sorted(rig.recorder.unwritten_ids()) == [21, 22]
    assert slots_back == []
    assert rig.batches_seen == []
