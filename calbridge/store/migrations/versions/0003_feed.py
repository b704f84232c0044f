"""Application feed: what the app was told per event identity (exactly-once across providers).

Revision ID: 0003_feed
Revises: 0002_jobs
Create Date: 2026-11-22 02:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_feed"
down_revision: str | Sequence[str] | None = "0002_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "app_feed",
        sa.Column("app_user_id", sa.String(length=255), nullable=False),
        sa.Column("identity", sa.String(length=512), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app_user_id", "identity", name=op.f("pk_app_feed")),
    )
    op.create_table(
        "app_feed_ids",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("app_user_id", sa.String(length=255), nullable=False),
        sa.Column("identity", sa.String(length=512), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_app_feed_ids_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "event_id", name=op.f("pk_app_feed_ids")),
    )


def downgrade() -> None:
    op.drop_table("app_feed_ids")
    op.drop_table("app_feed")
