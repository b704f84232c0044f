"""Idempotency keys are claimed before the provider call, with the request they were used for.

One row per key holds the SHA-256 of the first create request that used it. The claim is
an insert on the primary key, so of two concurrent first creates under one key exactly
one binds it; the other, with a different draft, is an ``IdempotencyConflict`` before any
provider call instead of silently overwriting the first event. Keys written before this
revision have no claim: the next create under them binds them.

Revision ID: 0007_idempotency_keys
Revises: 0006_circuit_breaker
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_idempotency_keys"
down_revision: str | Sequence[str] | None = "0006_circuit_breaker"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("app_user_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_app_user_id", "idempotency_keys", ["app_user_id"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_app_user_id", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
