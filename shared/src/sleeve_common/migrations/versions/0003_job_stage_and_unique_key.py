"""jobs: the stage a multi-step job is in, and a key that one active job at a time may hold

``unique_key`` is unique among queued and running jobs only (a partial index): the first-run
bootstrap holds "bootstrap", so a second ``sleeve run`` continues it instead of starting
another, and a finished or failed one no longer blocks the next.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ACTIVE_JOB = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stage", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("unique_key", sa.String(length=128), nullable=True))
    op.create_index(
        "uq_jobs_active_unique_key",
        "jobs",
        ["unique_key"],
        unique=True,
        sqlite_where=_ACTIVE_JOB,
        postgresql_where=_ACTIVE_JOB,
    )


def downgrade() -> None:
    op.drop_index("uq_jobs_active_unique_key", table_name="jobs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("unique_key")
        batch_op.drop_column("stage")
