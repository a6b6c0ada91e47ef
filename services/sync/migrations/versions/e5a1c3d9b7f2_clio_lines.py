"""clio_lines: line items by id, for the bulk line-item listing

Revision ID: e5a1c3d9b7f2
Revises: c7d2a9e4f1b3
Create Date: 2026-12-08 00:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e5a1c3d9b7f2"
down_revision: str | None = "c7d2a9e4f1b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clio_lines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("firm_id", sa.String(length=64), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("bill_id", sa.String(length=64), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clio_lines")),
        sa.UniqueConstraint("firm_id", "line_id", name=op.f("uq_clio_lines_firm_id")),
    )
    op.create_index("ix_clio_lines_firm_bill", "clio_lines", ["firm_id", "bill_id"])


def downgrade() -> None:
    op.drop_index("ix_clio_lines_firm_bill", table_name="clio_lines")
    op.drop_table("clio_lines")
