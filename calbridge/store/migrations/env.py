"""Alembic environment for calbridge (runs inside calbridge.store's write transaction)."""

from __future__ import annotations

import contextlib
import importlib

import sqlalchemy as sa
from alembic import context

from calbridge.store import create_engine, resolve_url, write
from calbridge.store.schema import metadata

config = context.config

#: modules defining tables on ``metadata`` (imported so autogenerate sees every table)
TABLE_MODULES = ("calbridge.store.jobs",)
for _module in TABLE_MODULES:
    with contextlib.suppress(ImportError):  # an optional part that is not installed
        importlib.import_module(_module)


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite ALTERs go through table copies
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(
        url=resolve_url(config.get_main_option("sqlalchemy.url")),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
    else:
        engine = create_engine(config.get_main_option("sqlalchemy.url"), upgrade=False)
        try:
            with write(engine) as conn:
                _run(conn)
        finally:
            engine.dispose()
