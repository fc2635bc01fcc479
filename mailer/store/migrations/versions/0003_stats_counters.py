"""Message and attempt counters per mailout, kept exact by triggers; a partial index for first/last sent_at.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

The counters live in the database, not in the service, so that every writer keeps them exact without
cooperating: the API, the engine, several processes, raw SQL in benchmarks and in psql.

- PostgreSQL: statement-level triggers with transition tables, so that a million-row INSERT … SELECT costs one
  aggregated upsert, not a million single-row ones.
- SQLite: row-level triggers (SQLite has no statement-level ones); its writes are small and serialised anyway.

Neither counter table has a foreign key to mailouts: a cascade would delete counter rows while the message
triggers of the same cascade still update them. Instead a trigger on mailouts deletes a mailout's counter
rows, and every decrement is an UPDATE, never an upsert, so a cascade can never re-create a deleted row.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each counter table: (table, counted table, counted column).
_MESSAGE_COUNTS = ("mailout_message_counts", "messages", "status")
_ATTEMPT_COUNTS = ("mailout_attempt_counts", "message_attempts", "outcome")

# --- PostgreSQL ---------------------------------------------------------------------------------------------


def _pg_increment(counts: str, column: str, rows: str) -> str:
    # ORDER BY: concurrent statements lock counter rows in one global (mailout_id, key) order, so two
    # statements that touch the same rows queue behind each other instead of deadlocking.
    return f"""
        INSERT INTO {counts} (mailout_id, {column}, n)
        SELECT mailout_id, {column}, count(*) FROM {rows}
        GROUP BY mailout_id, {column}
        ORDER BY mailout_id, {column}
        ON CONFLICT (mailout_id, {column}) DO UPDATE SET n = {counts}.n + excluded.n;
    """


def _pg_decrement(counts: str, column: str, rows: str) -> str:
    # An UPDATE only: during a cascade delete of a mailout its counter rows may already be gone, and they must
    # stay gone. The rows are locked first, in the same global order as increments take them (see above).
    return f"""
        PERFORM 1 FROM {counts} c
        WHERE (c.mailout_id, c.{column}) IN (SELECT DISTINCT mailout_id, {column} FROM {rows})
        ORDER BY c.mailout_id, c.{column}
        FOR UPDATE;
        UPDATE {counts} c SET n = c.n - d.n
        FROM (SELECT mailout_id, {column}, count(*) AS n FROM {rows} GROUP BY mailout_id, {column}) d
        WHERE c.mailout_id = d.mailout_id AND c.{column} = d.{column};
    """


def _pg_update_deltas(counts: str, column: str) -> str:
    # An UPDATE keeps the number of rows, so the change per key is (new rows with it) - (old rows with it); no
    # join by id is needed, which is cheaper on large updates. Keys that did not change cancel out: no-op
    # updates and updates of other columns (leases, next_attempt_at, a customer set to NULL) touch no counter.
    # A negative delta lands on the row that counted the old rows, so it never creates a row.
    return f"""
        INSERT INTO {counts} (mailout_id, {column}, n)
        SELECT mailout_id, {column}, sum(d) FROM (
            SELECT mailout_id, {column}, count(*) AS d FROM new_rows GROUP BY mailout_id, {column}
            UNION ALL
            SELECT mailout_id, {column}, -count(*) AS d FROM old_rows GROUP BY mailout_id, {column}
        ) deltas
        GROUP BY mailout_id, {column}
        HAVING sum(d) <> 0
        ORDER BY mailout_id, {column}
        ON CONFLICT (mailout_id, {column}) DO UPDATE SET n = {counts}.n + excluded.n;
    """


def _pg_function(name: str, body: str) -> str:
    return f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            {body}
            RETURN NULL;
        END
        $body$;
    """


def _pg_triggers(counts: str, table: str, column: str) -> list[str]:
    prefix = f"{counts}"
    statements = [
        _pg_function(f"{prefix}_on_insert", _pg_increment(counts, column, "new_rows")),
        _pg_function(f"{prefix}_on_update", _pg_update_deltas(counts, column)),
        _pg_function(f"{prefix}_on_delete", _pg_decrement(counts, column, "old_rows")),
        # TRUNCATE fires no DELETE triggers; without this a truncated table would leave stale counts.
        _pg_function(f"{prefix}_on_truncate", f"DELETE FROM {counts};"),
        f"""CREATE TRIGGER {prefix}_on_insert AFTER INSERT ON {table}
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {prefix}_on_insert()""",
        # No `UPDATE OF status`: PostgreSQL allows no column list on triggers with transition tables.
        f"""CREATE TRIGGER {prefix}_on_update AFTER UPDATE ON {table}
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {prefix}_on_update()""",
        f"""CREATE TRIGGER {prefix}_on_delete AFTER DELETE ON {table}
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {prefix}_on_delete()""",
        f"""CREATE TRIGGER {prefix}_on_truncate AFTER TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION {prefix}_on_truncate()""",
    ]
    return statements


def _pg_mailout_triggers() -> list[str]:
    body = """
        DELETE FROM mailout_message_counts WHERE mailout_id IN (SELECT id FROM old_rows);
        DELETE FROM mailout_attempt_counts WHERE mailout_id IN (SELECT id FROM old_rows);
    """
    return [
        _pg_function("mailout_counts_on_mailout_delete", body),
        """CREATE TRIGGER mailout_counts_on_mailout_delete AFTER DELETE ON mailouts
           REFERENCING OLD TABLE AS old_rows
           FOR EACH STATEMENT EXECUTE FUNCTION mailout_counts_on_mailout_delete()""",
    ]


def _pg_drop() -> list[str]:
    drops = []
    for counts, table, _column in (_MESSAGE_COUNTS, _ATTEMPT_COUNTS):
        for event in ("insert", "update", "delete", "truncate"):
            drops.append(f"DROP TRIGGER IF EXISTS {counts}_on_{event} ON {table}")
            drops.append(f"DROP FUNCTION IF EXISTS {counts}_on_{event}()")
    drops.append("DROP TRIGGER IF EXISTS mailout_counts_on_mailout_delete ON mailouts")
    drops.append("DROP FUNCTION IF EXISTS mailout_counts_on_mailout_delete()")
    return drops


# --- SQLite -------------------------------------------------------------------------------------------------


def _sqlite_increment(counts: str, column: str) -> str:
    return f"""
        INSERT INTO {counts} (mailout_id, {column}, n) VALUES (new.mailout_id, new.{column}, 1)
        ON CONFLICT (mailout_id, {column}) DO UPDATE SET n = n + 1;
    """


def _sqlite_decrement(counts: str, column: str) -> str:
    # An UPDATE only, never an upsert: see the module docstring.
    return f"UPDATE {counts} SET n = n - 1 WHERE mailout_id = old.mailout_id AND {column} = old.{column};"


def _sqlite_triggers(counts: str, table: str, column: str) -> list[str]:
    return [
        f"""CREATE TRIGGER {counts}_on_insert AFTER INSERT ON {table}
            BEGIN {_sqlite_increment(counts, column)} END""",
        f"""CREATE TRIGGER {counts}_on_update AFTER UPDATE OF mailout_id, {column} ON {table}
            WHEN old.{column} IS NOT new.{column} OR old.mailout_id IS NOT new.mailout_id
            BEGIN {_sqlite_decrement(counts, column)} {_sqlite_increment(counts, column)} END""",
        # Fires for FK cascade deletes too (SQLite runs foreign key actions like triggers).
        f"""CREATE TRIGGER {counts}_on_delete AFTER DELETE ON {table}
            BEGIN {_sqlite_decrement(counts, column)} END""",
    ]


def _sqlite_mailout_triggers() -> list[str]:
    return [
        """CREATE TRIGGER mailout_counts_on_mailout_delete AFTER DELETE ON mailouts
           BEGIN
               DELETE FROM mailout_message_counts WHERE mailout_id = old.id;
               DELETE FROM mailout_attempt_counts WHERE mailout_id = old.id;
           END""",
    ]


def _sqlite_drop() -> list[str]:
    drops = [
        f"DROP TRIGGER IF EXISTS {counts}_on_{event}"
        for counts, _table, _column in (_MESSAGE_COUNTS, _ATTEMPT_COUNTS)
        for event in ("insert", "update", "delete")
    ]
    drops.append("DROP TRIGGER IF EXISTS mailout_counts_on_mailout_delete")
    return drops


# --- both ---------------------------------------------------------------------------------------------------


def _backfill(counts: str, table: str, column: str) -> str:
    return f"""
        INSERT INTO {counts} (mailout_id, {column}, n)
        SELECT mailout_id, {column}, count(*) FROM {table} GROUP BY mailout_id, {column}
    """


def upgrade() -> None:
    op.create_table(
        "mailout_message_counts",
        sa.Column("mailout_id", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("mailout_id", "status", name="pk_mailout_message_counts"),
    )
    op.create_table(
        "mailout_attempt_counts",
        sa.Column("mailout_id", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("mailout_id", "outcome", name="pk_mailout_attempt_counts"),
    )
    # First and last send of a mailout become two index lookups instead of a scan of its sent messages.
    op.create_index(
        "ix_messages_mailout_id_sent_at",
        "messages",
        ["mailout_id", "sent_at"],
        postgresql_where=sa.text("sent_at IS NOT NULL"),
        sqlite_where=sa.text("sent_at IS NOT NULL"),
    )

    if op.get_bind().dialect.name == "postgresql":
        statements = [
            *_pg_triggers(*_MESSAGE_COUNTS),
            *_pg_triggers(*_ATTEMPT_COUNTS),
            *_pg_mailout_triggers(),
        ]
    else:
        statements = [
            *_sqlite_triggers(*_MESSAGE_COUNTS),
            *_sqlite_triggers(*_ATTEMPT_COUNTS),
            *_sqlite_mailout_triggers(),
        ]
    for statement in statements:
        op.execute(statement)
    # Backfill after the triggers exist, in the same transaction: on PostgreSQL CREATE TRIGGER locks the
    # tables against writes until commit, so no row is counted twice or missed by a writer running meanwhile.
    op.execute(_backfill(*_MESSAGE_COUNTS))
    op.execute(_backfill(*_ATTEMPT_COUNTS))


def downgrade() -> None:
    drops = _pg_drop() if op.get_bind().dialect.name == "postgresql" else _sqlite_drop()
    for statement in drops:
        op.execute(statement)
    op.drop_index("ix_messages_mailout_id_sent_at", table_name="messages")
    op.drop_table("mailout_attempt_counts")
    op.drop_table("mailout_message_counts")
