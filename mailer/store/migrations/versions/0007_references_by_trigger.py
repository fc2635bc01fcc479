"""PostgreSQL: what a deleted mailout or customer does to messages is done by triggers, not foreign keys.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Activating a mailout inserts all its messages in one statement, and PostgreSQL checks every foreign key of
every inserted row with a query of its own: EXPLAIN ANALYZE of a 1,000,000-message activation showed
"Trigger for constraint fk_messages_mailout_id_mailouts: time=9964 ms" and "…fk_messages_customer_id_
customers: time=11406 ms" in 46 s (issue 9 asks for 10 s). The recorder pays the same per attempt row
(`message_attempts.mailout_id`). These checks do not protect anything the code does not already ensure:
- a message is created only under a lock on its mailout's row (activation's conditional UPDATE, or
  `POST /api/mailouts/{id}/messages` reading it FOR UPDATE), from a customer row read in the same
  transaction;
- an attempt belongs to a message, whose own foreign key (kept) ties it to the mailout.
What the constraints did besides checking is their action on delete, which row triggers do now, in the
deleting transaction: a deleted mailout takes its messages with it (and they their attempts), and a deleted
customer leaves its messages with `customer_id` NULL. A customer deleted while an activation runs could
already, with the constraint, end with a message that was created for it (the constraint only made the
delete wait, then set the reference to NULL); now that message keeps the deleted customer's id, which is
never given to another customer (ids are not reused), so a read of it is a 404, never another record.

SQLite keeps its constraints (a check there is one B-tree probe in the same process, not a query), so
`tables.py` still declares them: they are what SQLite enforces.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, constraint, column, referred table, ON DELETE) of the constraints replaced.
_CONSTRAINTS = (
    ("messages", "fk_messages_mailout_id_mailouts", "mailout_id", "mailouts", "CASCADE"),
    ("messages", "fk_messages_customer_id_customers", "customer_id", "customers", "SET NULL"),
    ("message_attempts", "fk_message_attempts_mailout_id_mailouts", "mailout_id", "mailouts", "CASCADE"),
)
# (trigger and function name, table, what it does for the deleted row OLD).
_TRIGGERS = (
    ("messages_follow_mailout_delete", "mailouts", "DELETE FROM messages WHERE mailout_id = OLD.id"),
    (
        "messages_follow_customer_delete",
        "customers",
        "UPDATE messages SET customer_id = NULL WHERE customer_id = OLD.id",
    ),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, name, *_ in _CONSTRAINTS:
        op.drop_constraint(name, table, type_="foreignkey")
    for name, table, action in _TRIGGERS:
        op.execute(
            f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    {action};
                    RETURN NULL;
                END $$"""
        )
        op.execute(f"CREATE TRIGGER {name} AFTER DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, _action in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON {table}")
        op.execute(f"DROP FUNCTION {name}()")
    for table, name, column, referred, on_delete in _CONSTRAINTS:
        op.create_foreign_key(name, table, referred, [column], ["id"], ondelete=on_delete)
