"""Background jobs of the migration: shadow-read comparison and dual-write verification."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from ..jobs import HandlerRegistry, Job
from ..models import TimeRange
from ..router import Phase
from ..store import offload

if TYPE_CHECKING:
    from .._runtime import Runtime

__all__ = ["COMPARE_KIND", "VERIFY_KIND", "MigrationActivity", "register_migration_handlers"]

COMPARE_KIND = "migration.compare"
VERIFY_KIND = "migration.verify_write"
#: how long a dual write may take to show through the target before it is reported
VERIFY_ATTEMPTS = 6


def register_migration_handlers(handlers: HandlerRegistry, runtime: Runtime) -> None:
    """Add the migration's job kinds to ``handlers``."""
    from ._machine import MigrationError, Migrator

    async def compare(job: Job) -> object:
        migrator = Migrator(runtime, clock=runtime.clock)
        payload = job.payload
        window = None
        if payload.get("start") and payload.get("end"):
            window = TimeRange(
                start=dt.datetime.fromisoformat(payload["start"]),
                end=dt.datetime.fromisoformat(payload["end"]),
            )
        report = await migrator.check_parity(payload["app_user_id"], window=window)
        return report.as_dict()["clean"]

    async def verify_write(job: Job) -> object:
        from .._identity import resolve_event_id

        user, key = job.payload["app_user_id"], job.payload["key"]
        migrator = Migrator(runtime, clock=runtime.clock)
        state = await offload(migrator.status, user)
        if state.target_account_id is None:
            return "no target account"
        account = await runtime.aaccount(state.target_account_id)
        provider = runtime.provider(account.provider)
        session = runtime.session(account)
        calendars = await provider.list_calendars(session)
        primary = next((c for c in calendars if c.primary), calendars[0] if calendars else None)
        if primary is None:
            return "no target calendar"
        if job.payload.get("action") == "delete":
            return "deleted"
        event_id, _ = await resolve_event_id(
            runtime.store,
            key=key,
            app_user_id=user,
            provider=provider,
            session=session,
            account_id=state.target_account_id,
            calendar_id=primary.id,
        )
        if event_id is None:
            if job.attempts < VERIFY_ATTEMPTS:
                # a plain failure counts the attempt; the queue backs off between attempts
                raise MigrationError(f"{key} not yet visible through {account.provider}")
            await offload(
                runtime.store.audit_log.audit,
                "migration",
                "migration.write_unverified",
                app_user_id=user,
                account_id=account.id,
                detail={"key": key},
            )
            return "unverified"
        await offload(
            runtime.store.audit_log.audit,
            "migration",
            "migration.write_verified",
            app_user_id=user,
            account_id=account.id,
            detail={"key": key},
        )
        return "verified"

    handlers.add(COMPARE_KIND, compare)
    handlers.add(VERIFY_KIND, verify_write)


class MigrationActivity:
    """The migration's view of the app's reads and writes (an
    :class:`calbridge._activity.ActivityObserver` the bridge tells, on a store thread):
    in ``shadow`` a read is replayed against the target and compared in the background
    (one coalesced compare job per user); in ``dual`` a write is verified visible through
    the target a minute later."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def read(self, app_user_id: str, window: TimeRange) -> None:
        if self.runtime.user_facts(app_user_id).phase is not Phase.SHADOW:
            return
        self.runtime.queue.enqueue(
            COMPARE_KIND,
            {
                "app_user_id": app_user_id,
                "start": window.start.isoformat(),
                "end": window.end.isoformat(),
            },
            coalesce_key=f"compare:{app_user_id}",
        )

    def wrote(
        self, app_user_id: str, key: str, action: str, account_id: str, calendar_id: str
    ) -> None:
        if self.runtime.user_facts(app_user_id).phase is not Phase.DUAL:
            return
        self.runtime.queue.enqueue(
            VERIFY_KIND,
            {"app_user_id": app_user_id, "key": key, "action": action},
            run_at=self.runtime.clock() + 60,
            max_attempts=VERIFY_ATTEMPTS,
        )
