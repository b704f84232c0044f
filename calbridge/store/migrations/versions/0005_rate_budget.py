"""The application-wide rate budget shared by every process on the store.

Revision ID: 0005_rate_budget
Revises: 0004_id_map_event
Create Date: 2026-12-05 09:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_rate_budget"
down_revision: str | Sequence[str] | None = "0004_id_map_event"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_budget",
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("app", sa.String(255), nullable=False),
        sa.Column("window", sa.String(32), nullable=False),
        sa.Column("slots", sa.JSON, nullable=False),
        sa.Column("paused_until_ms", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("pause_ms", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("provider", "app", "window", name="pk_rate_budget"),
    )


def downgrade() -> None:
    op.drop_table("rate_budget")
