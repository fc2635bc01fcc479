"""Customers, mailouts, messages and their attempts.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mailer.store.coltypes import BigId, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("phone", sa.String(11), nullable=False),
        sa.Column("operator_code", sa.String(3), nullable=False),
        sa.Column("tag", sa.String(64), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
        sa.UniqueConstraint("phone", name="uq_customers_phone"),
    )
    op.create_index("ix_customers_operator_code_tag", "customers", ["operator_code", "tag"])
    op.create_index("ix_customers_tag", "customers", ["tag"])

    op.create_table(
        "mailouts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("start_at", UTCDateTime, nullable=False),
        sa.Column("end_at", UTCDateTime, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("operator_codes", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("window_start_s", sa.Integer, nullable=True),
        sa.Column("window_end_s", sa.Integer, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("activated_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_mailouts"),
    )
    op.create_index("ix_mailouts_status_start_at", "mailouts", ["status", "start_at"])

    op.create_table(
        "messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("mailout_id", BigId, nullable=False),
        sa.Column("customer_id", BigId, nullable=True),
        sa.Column("phone", sa.String(11), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime, nullable=True),
        sa.Column("lease_until", UTCDateTime, nullable=True),
        sa.Column("sent_at", UTCDateTime, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("mailout_id", "customer_id", name="uq_messages_mailout_id_customer_id"),
        sa.ForeignKeyConstraint(
            ["mailout_id"], ["mailouts.id"], name="fk_messages_mailout_id_mailouts", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_messages_customer_id_customers", ondelete="SET NULL"
        ),
    )
    op.create_index(
        "ix_messages_mailout_id_status_next_attempt_at",
        "messages",
        ["mailout_id", "status", "next_attempt_at"],
    )
    op.create_index("ix_messages_status_lease_until", "messages", ["status", "lease_until"])
    op.create_index("ix_messages_customer_id", "messages", ["customer_id"])

    op.create_table(
        "message_attempts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("message_id", BigId, nullable=False),
        sa.Column("mailout_id", BigId, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_message_attempts"),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_message_attempts_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["mailout_id"],
            ["mailouts.id"],
            name="fk_message_attempts_mailout_id_mailouts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_message_attempts_message_id", "message_attempts", ["message_id"])
    op.create_index("ix_message_attempts_mailout_id_outcome", "message_attempts", ["mailout_id", "outcome"])


def downgrade() -> None:
    op.drop_table("message_attempts")
    op.drop_table("messages")
    op.drop_table("mailouts")
    op.drop_table("customers")
