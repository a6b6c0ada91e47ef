"""each bill's latest email: which one its email event is of

Revision ID: e3c7a9b1d204
Revises: 7dc0e2a60a07
Create Date: 2026-12-07 21:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e3c7a9b1d204"
down_revision: str | None = "7dc0e2a60a07"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("email_id")
