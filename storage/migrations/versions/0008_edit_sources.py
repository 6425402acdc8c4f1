"""edit sources and album parts: the pictures of an edit of several (an album) in order, each
one's result where the backend edits one at a time, and edits.pictures (units reserved);
album_parts keeps the parts of albums arriving as separate messages until one process takes the
album. Additive, but no rolling upgrade: a replica of 0007 would edit an album's first picture
only and keep all its units (stop every replica first; the README's Upgrades)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12 09:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("edits", sa.Column("pictures", sa.Integer(), server_default="1", nullable=False))
    op.create_table(
        "edit_sources",
        sa.Column("edit_id", _ID, nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("image_id", _ID, nullable=False),
        sa.Column("result_image_id", _ID, nullable=True),
        sa.ForeignKeyConstraint(
            ["edit_id"],
            ["edits.id"],
            name=op.f("fk_edit_sources_edit_id_edits"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_edit_sources_image_id_images")
        ),
        sa.ForeignKeyConstraint(
            ["result_image_id"],
            ["images.id"],
            name=op.f("fk_edit_sources_result_image_id_images"),
        ),
        sa.PrimaryKeyConstraint("edit_id", "position", name=op.f("pk_edit_sources")),
    )

    op.create_table(
        "album_parts",
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("chat_id", sa.String(length=64), nullable=False),
        sa.Column("album_id", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("part", sa.Text(), nullable=False),
        sa.Column("taken", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "platform", "chat_id", "album_id", "message_id", name=op.f("pk_album_parts")
        ),
    )
    op.create_index("ix_album_parts_received_at", "album_parts", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_album_parts_received_at", table_name="album_parts")
    op.drop_table("album_parts")
    op.drop_table("edit_sources")
    op.drop_column("edits", "pictures")  # plain DROP COLUMN (SQLite 3.35+): no rebuild
