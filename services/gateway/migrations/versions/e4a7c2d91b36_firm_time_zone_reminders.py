"""the firm's time zone and Settings > Reminders

Revision ID: e4a7c2d91b36
Revises: df5ebdbcd54e
Create Date: 2026-12-07 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e4a7c2d91b36"
down_revision: str | None = "df5ebdbcd54e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INTS = (
    ("reminder_first_after_days", "15"),
    ("reminder_every_days", "15"),
    ("reminder_quiet_days", "3"),
    ("reminder_hours_start", "9"),
    ("reminder_hours_end", "17"),
)


def upgrade() -> None:
    with op.batch_alter_table("firms", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("time_zone", sa.String(length=64), server_default="UTC", nullable=False)
        )
        batch_op.add_column(
            sa.Column("reminders_enabled", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        for name, default in INTS:
            batch_op.add_column(
                sa.Column(name, sa.Integer(), server_default=default, nullable=False)
            )
        batch_op.add_column(sa.Column("reminder_before_due_days", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("reminder_subject", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("reminder_body", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("firms", schema=None) as batch_op:
        for name in ("reminder_body", "reminder_subject", "reminder_before_due_days"):
            batch_op.drop_column(name)
        for name, _ in reversed(INTS):
            batch_op.drop_column(name)
        batch_op.drop_column("reminders_enabled")
        batch_op.drop_column("time_zone")
