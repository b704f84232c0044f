"""The shared circuit breaker, and fairness across accounts in the rate budget.

Revision ID: 0006_circuit_breaker
Revises: 0005_rate_budget
Create Date: 2026-12-06 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_circuit_breaker"
down_revision: str | Sequence[str] | None = "0005_rate_budget"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "circuit_breaker",
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("app", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="closed"),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("opened_ms", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("probe_id", sa.String(64), nullable=True),
        sa.Column("probe_until_ms", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("provider", "app", name="pk_circuit_breaker"),
    )
    with op.batch_alter_table("rate_budget") as batch:
        batch.add_column(sa.Column("accounts", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rate_budget") as batch:
        batch.drop_column("accounts")
    op.drop_table("circuit_breaker")
