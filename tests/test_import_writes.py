"""The import writes two batches at once (PostgreSQL), and a batch never runs beside one that writes the
same phone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import cast

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.domain.customers import CustomerFields
from mailer.operations import imports
from mailer.store import customers as store
from mailer.store.tables import customers

# The fake store never touches it.
NO_DB = cast(AsyncEngine, None)


def ndjson(lines: Sequence[tuple[str, str]]) -> bytes:
    return b"".join(json.dumps({"phone": phone, "tag": tag}).encode() + b"\n" for phone, tag in lines)


async def once(body: bytes) -> AsyncIterator[bytes]:
    yield body


class FakeStore:
    """upsert_batch without a database: records when each write starts and ends, and keeps the rows.

    Batch `slow` takes many loop turns to write, standing for a batch the database is slow with; the
    others take one. What is asserted does not depend on how many: a write that starts while one in flight
    writes the same phone is a mistake however long the other takes.
    """

    def __init__(self, slow: int) -> None:
        self.slow = slow
        self.events: list[tuple[str, int]] = []
        self.rows: dict[str, str | None] = {}
        self.running: dict[int, set[str]] = {}
        self.overlapped = False

    async def upsert_batch(self, _db: object, batch: Sequence[CustomerFields]) -> store.UpsertOutcome:
        number = len([e for e in self.events if e[0] == "start"]) + 1
        phones = {fields.phone for fields in batch}
        for other, theirs in self.running.items():
            assert not phones & theirs, f"batch {number} started beside batch {other}, which writes {theirs}"
        self.overlapped |= bool(self.running)
        self.running[number] = phones
        self.events.append(("start", number))
        for _ in range(200 if number == self.slow else 1):
            await asyncio.sleep(0)  # the write's own duration, in loop turns
        created = [f for f in batch if f.phone not in self.rows]
        for fields in batch:
            self.rows[fields.phone] = fields.tag
        del self.running[number]
        self.events.append(("end", number))
        return store.UpsertOutcome(len(created), len(batch) - len(created), [], [])


@pytest.mark.parametrize("slow", [1, 2])
async def test_a_batch_waits_for_a_write_of_the_same_phone(
    monkeypatch: pytest.MonkeyPatch, slow: int
) -> None:
    monkeypatch.setattr(imports, "BATCH_ROWS", 2)
    fake = FakeStore(slow)
    monkeypatch.setattr(store, "upsert_batch", fake.upsert_batch)
    monkeypatch.setattr(store, "upserts_at_once", lambda _db: 2)
    lines = [
        ("79000000001", "a1"),
        ("79000000002", "a2"),  # batch 1
        ("79000000003", "b3"),
        ("79000000004", "b4"),  # batch 2: no phone of batch 1, written beside it
        ("79000000001", "c1"),
        ("79000000003", "c3"),  # batch 3: a phone of each; waits for both
        ("79000000005", "d5"),
        ("79000000006", "d6"),  # batch 4
        ("79000000005", "e5"),  # batch 5, written on the way out
    ]
    outcome = await imports.run_import(NO_DB, once(ndjson(lines)), "ndjson", 10**6)

    assert (outcome.created, outcome.updated, outcome.lines) == (6, 3, 9)
    assert fake.rows == {phone: tag for phone, tag in lines}  # the last line for a phone wins
    assert fake.overlapped, "two batches were written at once"
    assert fake.events.index(("end", slow)) < fake.events.index(("start", 3))
    assert fake.events.index(("end", 4)) < fake.events.index(("start", 5))


async def test_a_failed_batch_fails_the_import_after_the_other_write_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(imports, "BATCH_ROWS", 2)
    fake = FakeStore(slow=1)  # the batch beside the failing one

    async def first_fails(db: object, batch: Sequence[CustomerFields]) -> store.UpsertOutcome:
        if batch[0].phone == "79000000001":
            raise RuntimeError("the database said no")
        return await fake.upsert_batch(db, batch)

    monkeypatch.setattr(store, "upsert_batch", first_fails)
    monkeypatch.setattr(store, "upserts_at_once", lambda _db: 2)
    lines = [(f"7900000000{i}", "t") for i in range(1, 7)]
    with pytest.raises(RuntimeError, match="the database said no"):
        await imports.run_import(NO_DB, once(ndjson(lines)), "ndjson", 10**6)
    # The slow batch in flight beside the failed one was allowed to finish (all or nothing, each).
    assert ("end", 1) in fake.events
    assert not fake.running


async def test_the_last_line_for_a_phone_wins_across_many_small_batches(
    db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a real database, with writes in flight together: phones recur in the next batch and later."""
    monkeypatch.setattr(imports, "BATCH_ROWS", 3)
    # Batches of three out of five phones: each batch shares a phone with the one before it.
    lines = [(f"790000000{i % 5:02d}", f"line {i}") for i in range(60)]
    outcome = await imports.run_import(db, once(ndjson(lines)), "ndjson", 10**6)
    assert (outcome.created, outcome.updated, outcome.failed) == (5, 55, 0)
    async with db.connect() as conn:
        stored = {r.phone: r.tag for r in (await conn.execute(select(customers.c.phone, customers.c.tag)))}
    assert stored == {phone: tag for phone, tag in lines}
