"""The id map keeps the fingerprint of the create request an idempotency key was used with.

Reusing a key with another draft is then an ``IdempotencyConflict`` instead of silently
answering with the first event. Rows written before this revision have no fingerprint and
are not checked.

Revision ID: 0007_id_map_request
Revises: 0006_circuit_breaker
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_id_map_request"
down_revision: str | Sequence[str] | None = "0006_circuit_breaker"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("id_map") as batch:
        batch.add_column(sa.Column("request_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("id_map") as batch:
        batch.drop_column("request_sha256")
