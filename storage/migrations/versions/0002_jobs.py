"""durable jobs: every edit row is also the job that carries it out

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 07:20:00+00:00

Edits gain the job's columns (idempotency key, quota day, rank, attempts, lease, where to answer,
progress note, delivered message) and a partial unique index that lets one user hold at most one
job at the API. Images may be a platform file not fetched yet (`data` and `sha256` NULL).
Pending images (a platform file not fetched yet) have empty data and a placeholder sha256, so
no existing column changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WORKING = "status IN ('running', 'delivering')"


def upgrade() -> None:
    # Only new columns and indexes: SQLite adds them in place, while changing a column would
    # rebuild the table, which fails on a database whose other tables refer to it.
    image_columns: list[sa.Column[Any]] = [
        sa.Column("file_platform", sa.String(length=32), nullable=True),
        sa.Column("file_id", sa.Text(), nullable=True),
        sa.Column("file_name", sa.String(length=256), nullable=True),
    ]
    for column in image_columns:
        op.add_column("images", column)
    edit_columns: list[sa.Column[Any]] = [
        sa.Column("key", sa.String(length=160), nullable=True),
        sa.Column("quota_day", sa.Date(), nullable=True),
        sa.Column("rank", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reply_to", sa.String(length=64), nullable=True),
        sa.Column("language", sa.String(length=8), server_default="en", nullable=False),
        sa.Column("note_id", sa.String(length=64), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("notes", sa.Text(), server_default="", nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=True),
        sa.Column("delivery_started", sa.Boolean(), server_default=sa.false(), nullable=False),
    ]
    for column in edit_columns:
        op.add_column("edits", column)
    op.create_index("uq_edits_key", "edits", ["key"], unique=True)
    op.create_index("ix_edits_status_rank_id", "edits", ["status", "rank", "id"])
    op.create_index(
        "uq_edits_user_id_working",
        "edits",
        ["user_id"],
        unique=True,
        sqlite_where=sa.text(_WORKING),
        postgresql_where=sa.text(_WORKING),
    )
    _end_interrupted_edits()


def _end_interrupted_edits() -> None:
    """Edits a crash left running under the old code have no lease: end them and give their
    units back, as the old start-up recovery did, so no claim sees a "running" row that
    nobody renews."""
    conn = op.get_bind()
    running = conn.execute(
        sa.text("SELECT user_id, created_at FROM edits WHERE status = 'running'")
    ).all()
    give_back = sa.text(
        "UPDATE quota_usage SET used = used - 1 WHERE user_id = :user AND day = :day AND used > 0"
    ).bindparams(sa.bindparam("day", type_=sa.Date()))
    for user_id, created_at in running:
        if not isinstance(created_at, datetime):  # SQLite hands back text
            created_at = datetime.fromisoformat(str(created_at))
        conn.execute(give_back, {"user": user_id, "day": created_at.date()})
    op.execute(
        "UPDATE edits SET status = 'failed', error = 'interrupted', "
        "finished_at = CURRENT_TIMESTAMP WHERE status = 'running'"
    )


def downgrade() -> None:
    op.drop_index("uq_edits_user_id_working", table_name="edits")
    op.drop_index("ix_edits_status_rank_id", table_name="edits")
    op.drop_index("uq_edits_key", table_name="edits")
    # The old code knows running, succeeded, failed, refused and cancelled.
    op.execute("UPDATE edits SET status = 'failed' WHERE status IN ('queued', 'delivering')")
    for column in (
        "delivery_started", "message_id", "notes", "answer", "note_id", "language",
        "reply_to", "lease_until", "lease_owner", "attempts", "rank", "quota_day", "key",
    ):  # fmt: skip
        op.drop_column("edits", column)
    for column in ("file_name", "file_id", "file_platform"):
        op.drop_column("images", column)
