"""api slots: GLOBAL_API_CONCURRENCY's slots, one row each, held by an edit API call in flight
under a lease (a new table only: replicas of 0006 keep working beside it)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 09:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_slots",
        sa.Column("slot", sa.Integer(), autoincrement=False, primary_key=True),
        sa.Column("holder", sa.String(length=128), nullable=True),
        sa.Column("held_until", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("api_slots")
