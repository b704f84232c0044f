"""The calbridge schema: one SQLAlchemy ``MetaData`` every table is defined on.

Other packages (``calbridge.jobs``) add their tables to :data:`metadata` and ship their
own Alembic revision in ``calbridge/store/migrations/versions/``. Conventions:

* times are integer epoch seconds (``*_at``) or milliseconds (``*_ms``), UTC;
* ids are text; secret columns hold vault ciphertext (``kid:base64``), never plaintext;
* JSON columns hold secret-free data only.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "accounts",
    "app_feed",
    "app_feed_ids",
    "audit_log",
    "channels",
    "circuit_breaker",
    "credentials",
    "event_cache",
    "id_map",
    "idempotency_keys",
    "metadata",
    "metric_counts",
    "oauth_states",
    "provider_status",
    "rate_budget",
    "routing_state",
    "sync_cursors",
    "webhook_inbox",
]

#: constraint names are deterministic so migrations can refer to them on both backends
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: the MetaData of every calbridge table (store, auth, jobs)
metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

_ID = sa.String(64)
_NAME = sa.String(255)
_PROVIDER = sa.String(64)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("app_user_id", _NAME, nullable=False, index=True),
    sa.Column("provider", _PROVIDER, nullable=False),
    sa.Column("provider_account_id", _NAME, nullable=False),
    sa.Column("email", sa.String(320)),
    sa.Column("status", sa.String(32), nullable=False, server_default="active"),
    sa.Column("status_reason", _NAME),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint(
        "app_user_id", "provider", "provider_account_id", name="uq_accounts_user_provider_account"
    ),
)

credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column(
        "account_id",
        _ID,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("provider", _PROVIDER, nullable=False),
    #: vault ciphertexts, bound to (account id, provider, column)
    sa.Column("access_token", sa.Text, nullable=False),
    sa.Column("refresh_token", sa.Text),
    sa.Column("key_id", sa.String(64), nullable=False, index=True),
    sa.Column("expires_at", sa.BigInteger),
    sa.Column("scope", sa.Text, nullable=False, server_default=""),
    sa.Column("token_type", sa.String(32), nullable=False, server_default="Bearer"),
    sa.Column("extra", sa.JSON, nullable=False),
    #: incremented on every token change (compare-and-swap guard next to the old RT)
    sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
    #: refresh lease: who refreshes now, and until when (epoch ms)
    sa.Column("refresh_owner", _ID),
    sa.Column("refresh_lease_until_ms", sa.BigInteger),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

routing_state = sa.Table(
    "routing_state",
    metadata,
    sa.Column("app_user_id", _NAME, primary_key=True),
    #: e.g. "legacy", "dual_write", "cronofy" (owned by the router)
    sa.Column("phase", sa.String(64), nullable=False),
    sa.Column("primary_account_id", _ID, sa.ForeignKey("accounts.id", ondelete="SET NULL")),
    sa.Column("secondary_account_id", _ID, sa.ForeignKey("accounts.id", ondelete="SET NULL")),
    sa.Column("data", sa.JSON, nullable=False),
    #: optimistic-concurrency counter
    sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

provider_status = sa.Table(
    "provider_status",
    metadata,
    sa.Column("provider", _PROVIDER, primary_key=True),
    #: "active" or "paused" (app credentials refused: invalid_client)
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("reason", _NAME),
    sa.Column("paused_until", sa.BigInteger),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

channels = sa.Table(
    "channels",
    metadata,
    sa.Column("provider", _PROVIDER, primary_key=True),
    sa.Column("id", _NAME, primary_key=True),
    sa.Column("account_id", _ID, sa.ForeignKey("accounts.id", ondelete="CASCADE"), index=True),
    sa.Column("callback_url", sa.Text, nullable=False),
    sa.Column("calendar_ids", sa.JSON, nullable=False),
    sa.Column("filters", sa.JSON, nullable=False),
    sa.Column("resource_id", _NAME),
    sa.Column("expires_at", sa.BigInteger, index=True),
    #: vault ciphertext bound to (channel id, provider, "secret")
    sa.Column("secret", sa.Text),
    sa.Column("key_id", sa.String(64)),
    #: "healthy", "degraded", "expired", "stopped"
    sa.Column("health", sa.String(32), nullable=False, server_default="healthy"),
    sa.Column("health_reason", _NAME),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_notification_at", sa.BigInteger),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    sa.Column(
        "account_id", _ID, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("calendar_id", _NAME, primary_key=True),
    sa.Column("cursor", sa.Text),
    sa.Column("last_full_sync_at", sa.BigInteger),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

event_cache = sa.Table(
    "event_cache",
    metadata,
    sa.Column(
        "account_id", _ID, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("calendar_id", _NAME, primary_key=True),
    sa.Column("event_id", _NAME, primary_key=True),
    #: conservative UTC bounds (epoch seconds) for window queries
    sa.Column("start_at", sa.BigInteger, nullable=False),
    sa.Column("end_at", sa.BigInteger, nullable=False),
    sa.Column("ical_uid", _NAME, index=True),
    sa.Column("etag", _NAME),
    sa.Column("recurring_event_id", _NAME),
    #: the calbridge Event as JSON (``calbridge.make_converter()``; secrets redacted)
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_event_cache_window", "account_id", "calendar_id", "start_at"),
)

id_map = sa.Table(
    "id_map",
    metadata,
    #: the application's idempotency key for one logical event
    sa.Column("key", _NAME, primary_key=True),
    sa.Column("provider", _PROVIDER, primary_key=True),
    sa.Column("app_user_id", _NAME, nullable=False, index=True),
    sa.Column("account_id", _ID, sa.ForeignKey("accounts.id", ondelete="CASCADE")),
    sa.Column("calendar_id", _NAME, nullable=False),
    sa.Column("event_id", _NAME, nullable=False),
    sa.Column("ical_uid", _NAME, index=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    #: sync finds an app key by the provider event it became (every upserted event)
    sa.Index("ix_id_map_provider_event", "provider", "event_id"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    #: claimed (inserted) before the provider call: of two concurrent first creates under
    #: one key, exactly one binds it
    sa.Column("key", _NAME, primary_key=True),
    #: SHA-256 (hex) of the create request the key was first used with: the same key with
    #: another draft or calendar is an IdempotencyConflict (the draft itself is not kept)
    sa.Column("request_sha256", sa.String(64), nullable=False),
    sa.Column("app_user_id", _NAME, nullable=False, index=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

oauth_states = sa.Table(
    "oauth_states",
    metadata,
    #: sha256 of the state value (the state itself is never stored)
    sa.Column("state_hash", sa.String(64), primary_key=True),
    sa.Column("app_user_id", _NAME, nullable=False),
    sa.Column("provider", _PROVIDER, nullable=False),
    sa.Column("redirect_uri", sa.Text, nullable=False),
    #: vault ciphertext of the PKCE verifier, bound to (state hash, provider, column)
    sa.Column("code_verifier", sa.Text),
    sa.Column("key_id", sa.String(64)),
    sa.Column("scopes", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    sa.Column("used_at", sa.BigInteger),
)

webhook_inbox = sa.Table(
    "webhook_inbox",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("provider", _PROVIDER, nullable=False),
    #: unique per delivery (Standard Webhooks id, Google message number, Graph item key)
    sa.Column("delivery_key", _NAME, nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("channel_id", _NAME),
    sa.Column("account_id", _ID),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.Column("processed_at", sa.BigInteger),
    sa.UniqueConstraint("provider", "delivery_key", name="uq_webhook_inbox_delivery"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Column("app_user_id", _NAME, index=True),
    sa.Column("account_id", _ID),
    #: who decided: "router", "migration", "auth", "cli", ...
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(128), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
)

#: what the application was told, per app user and event identity (iCalUID + occurrence):
#: lets changes reported by two providers fronting one calendar reach the app once
app_feed = sa.Table(
    "app_feed",
    metadata,
    sa.Column("app_user_id", _NAME, primary_key=True),
    sa.Column("identity", sa.String(512), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

#: provider event id -> identity, so a deletion (which carries only the id) is recognised
app_feed_ids = sa.Table(
    "app_feed_ids",
    metadata,
    sa.Column(
        "account_id", _ID, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("event_id", _NAME, primary_key=True),
    sa.Column("app_user_id", _NAME, nullable=False),
    sa.Column("identity", sa.String(512), nullable=False),
)

#: the application-wide rate budget shared by every process on this store (one row per
#: provider, application (client id) and window; see calbridge/_budget.py, docs/store.md)
rate_budget = sa.Table(
    "rate_budget",
    metadata,
    sa.Column("provider", _PROVIDER, primary_key=True),
    sa.Column("app", _NAME, primary_key=True),
    #: the window's name: "1s", "60s", ...
    sa.Column("window", sa.String(32), primary_key=True),
    #: grants per slot, as [[slot number, grants], ...] over the window's last slots
    sa.Column("slots", sa.JSON, nullable=False),
    #: no grant before this time (a 429 paused every process); 0 when not paused
    sa.Column("paused_until_ms", sa.BigInteger, nullable=False, server_default="0"),
    #: the length of the last pause (consecutive 429s without Retry-After double it)
    sa.Column("pause_ms", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    #: fairness across accounts (revision 0006): background grants per account and slot,
    #: and the accounts waiting for a grant, as {"grants": {account: [[slot, grants], ...]},
    #: "waiting": {account: since_ms}}; NULL before the first
    sa.Column("accounts", sa.JSON, nullable=True),
)

#: each provider's circuit breaker, shared by every process on this store (one row per
#: provider and application (client id); see calbridge/_circuit_store.py, docs/store.md)
circuit_breaker = sa.Table(
    "circuit_breaker",
    metadata,
    sa.Column("provider", _PROVIDER, primary_key=True),
    sa.Column("app", _NAME, primary_key=True),
    #: "closed" or "open" (half-open is open with its cooldown over)
    sa.Column("state", sa.String(16), nullable=False, server_default="closed"),
    #: calls failed in a row, across processes
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    #: when the circuit last opened (store clock, epoch ms); 0 when never
    sa.Column("opened_ms", sa.BigInteger, nullable=False, server_default="0"),
    #: the half-open probe out: its id and until when its claim holds (a probe whose
    #: process died is given up then); NULL / 0 when none
    sa.Column("probe_id", sa.String(64), nullable=True),
    sa.Column("probe_until_ms", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
)

#: counts of what processes saw per provider (sync rounds by outcome, 429s answered ...),
#: one row per counting process (``source``) so no two processes write the same row; a
#: scrape sums them (see calbridge/_tally.py, docs/operations.md). Rows of processes gone
#: for a day are folded into the source ``"retired"``, so the sums never go down.
metric_counts = sa.Table(
    "metric_counts",
    metadata,
    #: the counting process: ``host:pid:start`` (``"retired"``: folded rows)
    sa.Column("source", sa.String(255), primary_key=True),
    #: what is counted: ``sync_rounds``, ``throttled``
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("provider", _PROVIDER, primary_key=True),
    #: the outcome counted (``ok``, ``error``; empty when the count has none)
    sa.Column("outcome", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
    #: when the source last added to it (store clock, epoch ms)
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
)
