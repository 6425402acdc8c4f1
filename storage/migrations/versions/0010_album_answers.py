"""album answers: when an album was taken and whether it was answered (its request submitted, or
the user told why not), so an album whose taker died before submitting it is taken again by
another process's sweep (two added columns; albums taken before are counted as answered)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-14 09:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("album_parts", sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "album_parts", sa.Column("answered", sa.Boolean(), server_default="0", nullable=False)
    )
    op.execute("UPDATE album_parts SET answered = taken")


def downgrade() -> None:
    op.drop_column("album_parts", "answered")  # plain DROP COLUMN (SQLite 3.35+): no rebuild
    op.drop_column("album_parts", "taken_at")
