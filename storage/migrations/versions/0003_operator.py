"""operator controls: chat and bot-wide daily counters, bans, extra edits granted by an admin

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 11:10:00+00:00

Only a new table and new columns with defaults (SQLite adds them in place).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("scope", sa.String(length=160), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("used", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("scope", "day", name=op.f("pk_counters")),
    )
    op.add_column("users", sa.Column("banned", sa.Boolean(), server_default="0", nullable=False))
    op.add_column("users", sa.Column("ban_told", sa.Boolean(), server_default="0", nullable=False))
    op.add_column(
        "quota_usage", sa.Column("granted", sa.Integer(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), not a batch rebuild: rebuilding "users" would cascade
    # into the tables that refer to it.
    op.drop_column("quota_usage", "granted")
    op.drop_column("users", "ban_told")
    op.drop_column("users", "banned")
    op.drop_table("counters")
