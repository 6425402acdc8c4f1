"""durable jobs: every edit row is also the job that carries it out

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 07:20:00+00:00

Edits gain the job's columns (idempotency key, quota day, rank, attempts, lease, where to answer,
progress note, delivered message) and a partial unique index that lets one user hold at most one
job at the API. Images may be a platform file not fetched yet (`data` and `sha256` NULL).
Batch mode, because SQLite cannot alter a column's nullability in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WORKING = "status IN ('running', 'delivering')"


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.alter_column("sha256", existing_type=sa.String(length=64), nullable=True)
        batch.alter_column("data", existing_type=sa.LargeBinary(), nullable=True)
        batch.add_column(sa.Column("file_platform", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("file_id", sa.Text(), nullable=True))
        batch.add_column(sa.Column("file_name", sa.String(length=256), nullable=True))
    with op.batch_alter_table("edits") as batch:
        batch.add_column(sa.Column("key", sa.String(length=160), nullable=True))
        batch.add_column(sa.Column("quota_day", sa.Date(), nullable=True))
        batch.add_column(sa.Column("rank", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reply_to", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("origin_id", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("language", sa.String(length=8), server_default="en", nullable=False)
        )
        batch.add_column(sa.Column("note_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("answer", sa.Text(), nullable=True))
        batch.add_column(sa.Column("notes", sa.Text(), server_default="", nullable=False))
        batch.add_column(sa.Column("message_id", sa.String(length=64), nullable=True))
        batch.create_unique_constraint(op.f("uq_edits_key"), ["key"])
    op.create_index("ix_edits_status_rank_id", "edits", ["status", "rank", "id"])
    op.create_index(
        "uq_edits_user_id_working",
        "edits",
        ["user_id"],
        unique=True,
        sqlite_where=sa.text(_WORKING),
        postgresql_where=sa.text(_WORKING),
    )
    # Edits a crash left running under the old code have no lease: end them, as the old start-up
    # recovery did, so the new claims never see a "running" row that nobody renews.
    op.execute("UPDATE edits SET status = 'failed', error = 'interrupted' WHERE status = 'running'")


def downgrade() -> None:
    op.drop_index("uq_edits_user_id_working", table_name="edits")
    op.drop_index("ix_edits_status_rank_id", table_name="edits")
    with op.batch_alter_table("edits") as batch:
        batch.drop_constraint(op.f("uq_edits_key"), type_="unique")
        for column in (
            "message_id", "notes", "answer", "note_id", "language", "origin_id", "reply_to",
            "lease_until", "lease_owner", "attempts", "rank", "quota_day", "key",
        ):  # fmt: skip
            batch.drop_column(column)
    op.execute("DELETE FROM images WHERE data IS NULL")
    with op.batch_alter_table("images") as batch:
        for column in ("file_name", "file_id", "file_platform"):
            batch.drop_column(column)
        batch.alter_column("data", existing_type=sa.LargeBinary(), nullable=False)
        batch.alter_column("sha256", existing_type=sa.String(length=64), nullable=False)
