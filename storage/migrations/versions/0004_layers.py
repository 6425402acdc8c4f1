"""drawn pictures and new ones: an edit may be words the bot drew on its source (captions, speech
bubbles); a user's size for new images from text

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 11:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("edits", sa.Column("layer", sa.Text(), nullable=True))
    op.add_column("users", sa.Column("image_size", sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "image_size")  # plain DROP COLUMN (SQLite 3.35+): no rebuild
    op.drop_column("edits", "layer")
