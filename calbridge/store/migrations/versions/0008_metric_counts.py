"""Counts of what processes saw per provider, for the metrics endpoint.

One row per counting process, name, provider and outcome (sync rounds ok / error, 429s
answered); a scrape sums them across processes and hosts.

Revision ID: 0008_metric_counts
Revises: 0007_idempotency_keys
Create Date: 2026-12-06 02:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_metric_counts"
down_revision: str | Sequence[str] | None = "0007_idempotency_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_counts",
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("source", "name", "provider", "outcome", name="pk_metric_counts"),
    )


def downgrade() -> None:
    op.drop_table("metric_counts")
