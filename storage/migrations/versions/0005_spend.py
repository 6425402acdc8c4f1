"""money and the fallback: which model made each picture; whether an edit's request left for the
image model (past cancelling); the day's spend in the counters (micro-dollars, so 64 bits); a
small table of the bot's own values (the salt of the end-user hash sent to vendors); the platform
events already handled (a redelivery is recognised) and those received but not yet handled; who
sent each photo (so /forget finds the photos no edit used), and expired images give their hash up
(the same bytes stored again make a new, available image)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 10:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("edits", sa.Column("model", sa.String(length=128), nullable=True))
    op.add_column("edits", sa.Column("api_sent", sa.Boolean(), nullable=False, server_default="0"))
    if op.get_bind().dialect.name == "postgresql":  # SQLite's INTEGER is 64 bits already
        op.alter_column("counters", "used", type_=sa.BigInteger(), existing_type=sa.Integer())
    op.create_table(
        "handled_events",
        sa.Column("platform", sa.String(length=32), primary_key=True),
        sa.Column("event_id", sa.String(length=64), primary_key=True),
        sa.Column(
            "handled_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
    )
    op.create_index("ix_handled_events_handled_at", "handled_events", ["handled_at"])
    op.create_table(
        "received_events",
        sa.Column("platform", sa.String(length=32), primary_key=True),
        sa.Column("event_id", sa.String(length=64), primary_key=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
    )
    op.create_table(
        "bot_values",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.add_column("images", sa.Column("user_id", id_type, nullable=True))
    op.create_index("ix_images_user_id", "images", ["user_id"])
    op.execute(
        "UPDATE images SET sha256 = 'expired-' || CAST(id AS VARCHAR(20)) WHERE mime = 'expired'"
    )


def downgrade() -> None:
    # an expired image's placeholder hash is a valid value before 0005 too: it stays
    op.drop_index("ix_images_user_id", table_name="images")
    op.drop_column("images", "user_id")  # plain DROP COLUMN (SQLite 3.35+): no rebuild
    op.drop_table("bot_values")
    op.drop_table("received_events")
    op.drop_index("ix_handled_events_handled_at", table_name="handled_events")
    op.drop_table("handled_events")
    op.execute("DELETE FROM counters WHERE scope = 'spend'")  # micro-dollars pass 32 bits
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("counters", "used", type_=sa.Integer(), existing_type=sa.BigInteger())
    op.drop_column("edits", "api_sent")
    op.drop_column("edits", "model")
