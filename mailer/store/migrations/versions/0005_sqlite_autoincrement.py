"""Ids are never reused on SQLite: AUTOINCREMENT on every table with a generated id.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Without AUTOINCREMENT SQLite gives a new row max(rowid) + 1, so deleting the newest mailout hands its id to
the next one: an old link, a provider callback or anything keyed by that id then points at another record.
PostgreSQL's sequences never go back, so only SQLite changes.

SQLite cannot add AUTOINCREMENT to an existing table: each table is rebuilt the way SQLite's documentation
prescribes (create the new table, copy, drop the old one, rename), keeping its indexes and triggers. Foreign
key enforcement is off on the migration's own connection, so dropping a referenced table cascades nothing,
and the references of other tables (by name) find the renamed table. Copying the rows with their ids seeds
`sqlite_sequence` with the highest id present.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("customers", "mailouts", "messages", "message_attempts")
# How SQLAlchemy wrote the primary key of these tables in 0001 (naming convention `pk_%(table_name)s`).
ID_COLUMN = "id INTEGER NOT NULL"


def _pk_constraint(table: str) -> str:
    return f"CONSTRAINT pk_{table} PRIMARY KEY (id)"


def _autoincrement_sql(table: str, create_sql: str, new_name: str) -> str:
    """The table's CREATE statement with `id` as `INTEGER PRIMARY KEY AUTOINCREMENT`, under a new name."""
    pk = _pk_constraint(table)
    if ID_COLUMN not in create_sql or pk not in create_sql:
        raise RuntimeError(f"unexpected schema of {table!r}, cannot add AUTOINCREMENT: {create_sql}")
    body = create_sql.split("(", 1)[1]
    body = body.replace(ID_COLUMN, f"id INTEGER NOT NULL CONSTRAINT pk_{table} PRIMARY KEY AUTOINCREMENT", 1)
    # Drop the table-level constraint together with the comma and white space before it.
    head, tail = body.split(pk, 1)
    body = head.rstrip().removesuffix(",") + tail
    return f"CREATE TABLE {new_name} ({body}"


def _rebuild(table: str) -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT type, sql FROM sqlite_master WHERE tbl_name = :t AND sql IS NOT NULL"), {"t": table}
    ).all()
    create_sql = next(sql for kind, sql in rows if kind == "table")
    if "AUTOINCREMENT" in create_sql.upper():
        return
    dependents = [sql for kind, sql in rows if kind in ("index", "trigger")]
    new_name = f"_new_{table}"
    op.execute(_autoincrement_sql(table, create_sql, new_name))
    op.execute(f"INSERT INTO {new_name} SELECT * FROM {table}")
    # Dropping the old table drops its indexes and triggers; they are created again on the new one below.
    op.execute(f"DROP TABLE {table}")
    op.execute(f"ALTER TABLE {new_name} RENAME TO {table}")
    for sql in dependents:
        op.execute(sql)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    foreign_keys = op.get_bind().execute(sa.text("PRAGMA foreign_keys")).scalar()
    if foreign_keys:
        raise RuntimeError("migration 0005 needs foreign key enforcement off on the migration connection")
    for table in TABLES:
        _rebuild(table)


def downgrade() -> None:
    # Ids handed out stay handed out; AUTOINCREMENT is harmless to keep.
    pass
