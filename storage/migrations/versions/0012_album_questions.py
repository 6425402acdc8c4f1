"""album questions: a user's current image, and a message showing it, may stand for the other
photos of an album sent without a caption too (chat_heads.more_images, shown_messages.more_images:
their image ids in order), so the prompt that answers the bot's one question edits the whole
album (two added columns, NULL for what was kept before: one picture, as then). Each value names
the image it goes with ("11:12,13"): a replica of 0011 that changes a row's image leaves the
column as it was, and the newer code then ignores it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-15 09:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("chat_heads", sa.Column("more_images", sa.Text(), nullable=True))
    op.add_column("shown_messages", sa.Column("more_images", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("shown_messages", "more_images")  # plain DROP COLUMN (SQLite 3.35+)
    op.drop_column("chat_heads", "more_images")
