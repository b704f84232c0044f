"""Index the id map by provider event: sync looks up every upserted event by its id.

Revision ID: 0004_id_map_event
Revises: 0003_feed
Create Date: 2026-12-03 23:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_id_map_event"
down_revision: str | Sequence[str] | None = "0003_feed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_id_map_provider_event", "id_map", ["provider", "event_id"])


def downgrade() -> None:
    op.drop_index("ix_id_map_provider_event", table_name="id_map")
