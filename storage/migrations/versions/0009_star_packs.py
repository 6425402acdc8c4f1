"""star packs: edits bought with Telegram Stars, one ledger row per pack (the payment's record,
unique by Telegram's charge id), and the pack each edit's unit came from (an added table and a
nullable column; no rolling upgrade: a replica of 0008 would give a bought edit back to the free
quota, so stop every replica first)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 09:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "star_packs",
        sa.Column("id", id_type, autoincrement=True, primary_key=True),
        sa.Column(
            "user_id",
            id_type,
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_star_packs_user_id_users"),
            nullable=False,
        ),
        sa.Column("charge_id", sa.String(length=255), nullable=False),
        sa.Column("stars", sa.Integer(), nullable=False),
        sa.Column("bought", sa.Integer(), nullable=False),
        sa.Column("used", sa.Integer(), server_default="0", nullable=False),
        sa.Column("refunded", sa.Integer(), server_default="0", nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column(
            "paid_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("charge_id", name="uq_star_packs_charge_id"),
    )
    op.create_index("ix_star_packs_user_id_id", "star_packs", ["user_id", "id"])
    op.create_index("ix_star_packs_day", "star_packs", ["day"])
    # No foreign key on SQLite: adding one would rebuild the edits table. The column only
    # ever holds ids of packs, which are never deleted but with their user (and their edits).
    op.add_column("edits", sa.Column("pack_id", id_type, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.create_foreign_key(
            "fk_edits_pack_id_star_packs", "edits", "star_packs", ["pack_id"], ["id"]
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("fk_edits_pack_id_star_packs", "edits", type_="foreignkey")
    op.drop_column("edits", "pack_id")
    op.drop_index("ix_star_packs_day", table_name="star_packs")
    op.drop_index("ix_star_packs_user_id_id", table_name="star_packs")
    op.drop_table("star_packs")
