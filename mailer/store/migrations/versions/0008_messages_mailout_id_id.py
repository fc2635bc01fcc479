"""Index on messages (mailout_id, id): a mailout's messages read page by page straight off an index.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Every page of a mailout's messages (`GET /api/mailouts/{id}/messages?after=`, the admin messages table, each
batch of the CSV export) is `WHERE mailout_id = ? AND id > ? ORDER BY id LIMIT n`. No index held both
columns in that order, so SQLite read every message after the cursor and sorted them (with 100,000 messages
the first page of an export cost 53 ms); on (mailout_id, id) a page reads its n rows in order and stops.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_messages_mailout_id_id", "messages", ["mailout_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_mailout_id_id", table_name="messages")
