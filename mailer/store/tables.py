"""The schema as SQLAlchemy Core tables; migrations in `migrations/` create exactly this."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from mailer.store.coltypes import BigId, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

customers = Table(
    "customers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("phone", String(11), nullable=False, unique=True),
    Column("operator_code", String(3), nullable=False),
    Column("tag", String(64), nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Activation selects the audience by operator code and tag.
    Index(None, "operator_code", "tag"),
    Index(None, "tag"),
    # Ids are never reused (migration 0005): a deleted record's id must not point at a new one.
    sqlite_autoincrement=True,
)

mailouts = Table(
    "mailouts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("start_at", UTCDateTime, nullable=False),
    Column("end_at", UTCDateTime, nullable=False),
    Column("text", Text, nullable=False),
    Column("operator_codes", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    # Seconds since local midnight; both null means "any time".
    Column("window_start_s", Integer, nullable=True),
    Column("window_end_s", Integer, nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("activated_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    # The scheduler looks for what is due by status and time.
    Index(None, "status", "start_at"),
    # Ids are never reused (migration 0005): a deleted record's id must not point at a new one.
    sqlite_autoincrement=True,
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # On PostgreSQL triggers on `mailouts` and `customers` do what these two constraints do on delete
    # (migration 0007: their per-row checks were half of an activation); SQLite enforces them as declared.
    Column("mailout_id", BigId, ForeignKey("mailouts.id", ondelete="CASCADE"), nullable=False),
    # SET NULL: deleting a customer keeps the history of what was sent to it (phone is copied here).
    Column("customer_id", BigId, ForeignKey("customers.id", ondelete="SET NULL"), nullable=True),
    Column("phone", String(11), nullable=False),
    # Copied at activation: the window arithmetic must not depend on a row that may be gone.
    Column("timezone", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("mailout_id", "customer_id"),
    # Claims: due pending messages in (next_attempt_at, id) order, read straight off the index (migration
    # 0004: without `id`, a million messages sharing one due time were sorted for every claim).
    Index(None, "mailout_id", "status", "next_attempt_at", "id"),
    # Paging a mailout's messages (API, admin table, CSV export) in id order after a cursor, without a sort
    # (migration 0008).
    Index(None, "mailout_id", "id"),
    Index(None, "customer_id"),
    # Ids are never reused (migration 0005): a deleted record's id must not point at a new one.
    sqlite_autoincrement=True,
)

message_attempts = Table(
    "message_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", BigId, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    # Denormalised so that error counts by kind need no join with a million messages. On PostgreSQL without
    # the constraint (migration 0007): an attempt goes with its message, which goes with its mailout.
    Column("mailout_id", BigId, ForeignKey("mailouts.id", ondelete="CASCADE"), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Index(None, "message_id"),
    Index(None, "mailout_id", "outcome"),
    # Ids are never reused (migration 0005): a deleted record's id must not point at a new one.
    sqlite_autoincrement=True,
)

# One row per daily report: inserting it (ON CONFLICT DO NOTHING) and then taking its lease with a conditional
# UPDATE decides which of several processes sends; a failed send is retried, by any process, after
# next_attempt_at, and a sender that died is replaced once its lease has passed.
report_runs = Table(
    "report_runs",
    metadata,
    Column("report_date", Date, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("claimed_by", String(128), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# One row per (API user, Idempotency-Key) of a create (mailer/api/idempotency.py, migration 0006). The primary
# key makes the first request the only one to insert it, in every process; `status_code` is null while that
# request runs, and `locked_until` lets another take over once a process died before storing its response.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_name", String(255), primary_key=True),
    Column("idem_key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("content_type", String(255), nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("locked_until", UTCDateTime, nullable=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The purge deletes by expiry.
    Index(None, "expires_at"),
)

# Message counts per (mailout, status) and attempt counts per (mailout, outcome), kept exact by triggers in
# the database (migration 0003) so that statistics read a few rows instead of counting a million. No foreign
# key to mailouts: a cascade would fight the triggers; a trigger on mailouts deletes a mailout's rows instead.
mailout_message_counts = Table(
    "mailout_message_counts",
    metadata,
    Column("mailout_id", BigInteger, primary_key=True, autoincrement=False),
    Column("status", String(16), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

mailout_attempt_counts = Table(
    "mailout_attempt_counts",
    metadata,
    Column("mailout_id", BigInteger, primary_key=True, autoincrement=False),
    Column("outcome", String(16), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

# First and last send of a mailout: two index lookups instead of a scan of its sent messages.
Index(
    "ix_messages_mailout_id_sent_at",
    messages.c.mailout_id,
    messages.c.sent_at,
    postgresql_where=messages.c.sent_at.is_not(None),
    sqlite_where=messages.c.sent_at.is_not(None),
)

# Lease recovery: only `sending` rows are ever looked up by lease, and there are few of them at any time, so a
# partial index costs nothing when a million pending messages are inserted (migration 0004).
Index(
    "ix_messages_lease_until_sending",
    messages.c.lease_until,
    postgresql_where=messages.c.status == "sending",
    sqlite_where=messages.c.status == "sending",
)
