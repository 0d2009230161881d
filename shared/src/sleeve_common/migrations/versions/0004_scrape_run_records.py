"""scrape runs: a heartbeat, the attempt that may write, and what the run fetched, rejected
(by reason), saw per genre, requested and got wrong (by kind)

Existing rows get zeros and empty maps; a run left ``running`` by an older version has no
heartbeat, so it reads as interrupted, which it is.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scrape_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fetched", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("rejected_by_reason", sa.JSON(), server_default="{}", nullable=False)
        )
        batch_op.add_column(
            sa.Column("seen_by_genre", sa.JSON(), server_default="{}", nullable=False)
        )
        batch_op.add_column(sa.Column("requests", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("errors_by_kind", sa.JSON(), server_default="{}", nullable=False)
        )
        batch_op.add_column(
            sa.Column("request_rate", sa.Float(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("attempt", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scrape_runs", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("attempt")
        batch_op.drop_column("request_rate")
        batch_op.drop_column("errors_by_kind")
        batch_op.drop_column("requests")
        batch_op.drop_column("seen_by_genre")
        batch_op.drop_column("rejected_by_reason")
        batch_op.drop_column("fetched")
