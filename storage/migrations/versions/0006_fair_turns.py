"""fair turns: an edit's place in the claim's order counts its user's edits ended lately, found
by this index

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 13:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_edits_user_id_finished_at", "edits", ["user_id", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_edits_user_id_finished_at", table_name="edits")
