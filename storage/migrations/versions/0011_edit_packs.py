"""edit packs: how many of an edit's units came from which bought pack (the rest from the day's
free quota), so a request of several pictures uses the free units left first and then as many
packs as it needs, and gives back to each what it took; edits.pack_id (one pack for all of an
edit's units) moves into it. No rolling upgrade: a replica of 0010 reads edits.pack_id (stop
every replica first)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-14 10:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "edit_packs",
        sa.Column("edit_id", _ID, nullable=False),
        sa.Column("pack_id", _ID, nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["edit_id"], ["edits.id"], name=op.f("fk_edit_packs_edit_id_edits"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["pack_id"], ["star_packs.id"], name=op.f("fk_edit_packs_pack_id_star_packs")
        ),
        sa.PrimaryKeyConstraint("edit_id", "pack_id", name=op.f("pk_edit_packs")),
    )
    op.execute(
        "INSERT INTO edit_packs (edit_id, pack_id, units) "
        "SELECT id, pack_id, pictures FROM edits WHERE pack_id IS NOT NULL"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("fk_edits_pack_id_star_packs", "edits", type_="foreignkey")
    op.drop_column("edits", "pack_id")  # plain DROP COLUMN (SQLite 3.35+): no rebuild


def downgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.add_column("edits", sa.Column("pack_id", id_type, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.create_foreign_key(
            "fk_edits_pack_id_star_packs", "edits", "star_packs", ["pack_id"], ["id"]
        )
    # (an edit that took from several packs keeps the oldest: 0010 knew one pack per edit)
    op.execute(
        "UPDATE edits SET pack_id = (SELECT min(pack_id) FROM edit_packs "
        "WHERE edit_packs.edit_id = edits.id)"
    )
    op.drop_table("edit_packs")
