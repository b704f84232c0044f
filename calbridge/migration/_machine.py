"""The per-account migration state machine.

::

    legacy ──start──▶ shadow ──dual──▶ dual ──cutover──▶ cutover ──retire──▶ retired
       ▲                 │               │                  │                  │
       └──────────────── rollback (from every phase) ◀──────┴──────────────────┘

* ``shadow``: legacy serves; reads are replayed against the target and compared.
* ``dual``: legacy is primary; every write is verified visible through the target.
* ``cutover``: the target serves; legacy is kept warm (tokens, channels) for rollback.
  Guarded: the target account is active, its initial sync is complete, and parity has been
  clean for ``clean_period`` seconds.
* ``retired``: legacy channels stopped, legacy tokens revoked, the id map kept.

Every transition is a compare-and-set on the user's routing row, audited, and idempotent
(asking for the phase a user is already in does nothing), so bulk runs resume after a
crash by running again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from ..errors import CalbridgeError, NotFound
from ..models import AccountStatus, Event, TimeRange
from ..router import Phase, cohort_bucket
from ._parity import ParityReport, compare

__all__ = [
    "BulkResult",
    "GuardFailed",
    "MigrationError",
    "Migrator",
    "PlanRow",
    "UserMigration",
]

_ORDER = [Phase.LEGACY, Phase.SHADOW, Phase.DUAL, Phase.CUTOVER, Phase.RETIRED]


class MigrationError(CalbridgeError):
    """A migration step cannot be taken."""


class GuardFailed(MigrationError):
    """A guard refused the step; ``reasons`` say what is missing."""

    def __init__(self, app_user_id: str, to: Phase, reasons: Sequence[str]) -> None:
        self.reasons = tuple(reasons)
        super().__init__(f"{app_user_id}: cannot move to {to}: " + "; ".join(reasons))


@attrs.frozen(kw_only=True)
class UserMigration:
    """One user's migration state."""

    app_user_id: str
    phase: Phase
    legacy_provider: str | None
    legacy_account_id: str | None
    target_account_id: str | None
    parity_clean_since: float | None = None
    last_parity: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "app_user_id": self.app_user_id,
            "phase": str(self.phase),
            "legacy_provider": self.legacy_provider,
            "legacy_account_id": self.legacy_account_id,
            "target_account_id": self.target_account_id,
            "parity_clean_since": self.parity_clean_since,
            "last_parity": self.last_parity,
        }


@attrs.frozen(kw_only=True)
class PlanRow:
    """Where one user stands for a migration plan."""

    app_user_id: str
    phase: Phase
    #: "ready", "waiting_reauth" (no active target authorization), "in_progress", "done",
    #: "no_legacy"
    readiness: str
    detail: str = ""


@attrs.frozen(kw_only=True)
class BulkResult:
    """The outcome of a bulk transition."""

    to: Phase
    dry_run: bool
    moved: tuple[str, ...] = ()
    already: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "to": str(self.to),
            "dry_run": self.dry_run,
            "moved": list(self.moved),
            "already": list(self.already),
            "refused": [{"user": u, "reason": r} for u, r in self.refused],
        }


@attrs.define
class Migrator:
    """Moves users from their legacy provider to the target provider, and back.

    Args:
        runtime: the bridge runtime (:attr:`calbridge.CalBridge.runtime`).
        clean_period: seconds parity must have been clean before cutover.
        grace: seconds a change may take to propagate before parity counts it.
        window_days: the parity window, days before and after now.
    """

    runtime: Any
    clean_period: float = 24 * 3600.0
    grace: float = 600.0
    window_days: tuple[int, int] = (7, 60)
    clock: Callable[[], float] = time.time

    @property
    def target(self) -> str:
        """The provider users move to."""
        return str(self.runtime.config.target_provider)

    # -- reading state -------------------------------------------------------------------

    def status(self, app_user_id: str) -> UserMigration:
        """The user's migration state (``legacy`` when never started)."""
        facts = self.runtime.user_facts(app_user_id)
        routing = self.runtime.store.get_routing(app_user_id)
        data = dict(routing.data) if routing is not None else {}
        legacy = data.get("legacy_account_id")
        if legacy is None:
            acct = next((a for a in facts.accounts if a.provider != self.target), None)
            legacy = acct.account_id if acct else None
        target = next(
            (a for a in facts.accounts if a.provider == self.target and a.active), None
        ) or next((a for a in facts.accounts if a.provider == self.target), None)
        return UserMigration(
            app_user_id=app_user_id,
            phase=facts.phase or Phase.LEGACY,
            legacy_provider=data.get("legacy_provider") or self._provider_of(facts, legacy),
            legacy_account_id=legacy,
            target_account_id=target.account_id if target else None,
            parity_clean_since=data.get("parity_clean_since"),
            last_parity=data.get("last_parity"),
        )

    @staticmethod
    def _provider_of(facts: Any, account_id: str | None) -> str | None:
        return next((a.provider for a in facts.accounts if a.account_id == account_id), None)

    def users(self) -> list[str]:
        """Every app user that holds a legacy (non-target) account."""
        return sorted(
            {a.app_user_id for a in self.runtime.store.list_accounts() if a.provider != self.target}
        )

    def cohort(
        self,
        *,
        users: Iterable[str] | None = None,
        percent: float | None = None,
        tenant: str | None = None,
        salt: str = "migration",
    ) -> list[str]:
        """Select users by explicit list, deterministic percentage, and/or tenant."""
        chosen = list(users) if users is not None else self.users()
        if percent is not None:
            chosen = [u for u in chosen if cohort_bucket(u, salt) < percent]
        if tenant is not None:
            chosen = [u for u in chosen if self.runtime.user_facts(u).tenant == tenant]
        return sorted(set(chosen))

    def plan(self, users: Iterable[str]) -> list[PlanRow]:
        """Readiness of each user; users without an active target authorization wait."""
        rows = []
        for user in users:
            state = self.status(user)
            facts = self.runtime.user_facts(user)
            target = facts.account(self.target)
            if state.phase is Phase.RETIRED:
                rows.append(PlanRow(app_user_id=user, phase=state.phase, readiness="done"))
            elif state.legacy_account_id is None:
                rows.append(PlanRow(app_user_id=user, phase=state.phase, readiness="no_legacy"))
            elif target is None or not target.active:
                why = (
                    "not yet re-authorised through " + self.target
                    if target is None
                    else (f"{self.target} account is {target.status}")
                )
                rows.append(
                    PlanRow(
                        app_user_id=user, phase=state.phase, readiness="waiting_reauth", detail=why
                    )
                )
            elif state.phase is Phase.LEGACY:
                rows.append(PlanRow(app_user_id=user, phase=state.phase, readiness="ready"))
            else:
                rows.append(PlanRow(app_user_id=user, phase=state.phase, readiness="in_progress"))
        return rows

    # -- guards --------------------------------------------------------------------------

    def blockers(self, app_user_id: str, to: Phase) -> list[str]:
        """Why ``to`` cannot be entered now (empty when it can)."""
        state = self.status(app_user_id)
        if to is Phase.LEGACY:
            return []
        reasons: list[str] = []
        facts = self.runtime.user_facts(app_user_id)
        target = facts.account(self.target)
        if state.legacy_account_id is None and state.phase is Phase.LEGACY:
            reasons.append("the user has no legacy account")
        if target is None:
            reasons.append(f"the user has not authorised {self.target} yet")
        elif not target.active:
            reasons.append(f"the {self.target} account is {target.status}")
        current = _ORDER.index(state.phase)
        wanted = _ORDER.index(to)
        if wanted > current + 1:
            reasons.append(
                f"{state.phase} -> {to} skips a phase; go through {_ORDER[current + 1]} first"
            )
        if to is Phase.CUTOVER and target is not None:
            if not self._initial_sync_complete(target.account_id):
                reasons.append(f"the {self.target} initial sync is not complete")
            since = state.parity_clean_since
            if since is None:
                reasons.append("parity has not been clean yet (run `calbridge migrate diff`)")
            elif self.clock() - since < self.clean_period:
                left = self.clean_period - (self.clock() - since)
                reasons.append(f"parity must stay clean for {left:.0f} s more")
        return reasons

    def _initial_sync_complete(self, account_id: str) -> bool:
        details = self.runtime.store.account_details(account_id)
        if details.get("initial_sync_required") is True:
            return False
        from ..store import read, schema

        with read(self.runtime.engine) as conn:
            synced = conn.execute(
                schema.sync_cursors.select().where(
                    schema.sync_cursors.c.account_id == account_id,
                    schema.sync_cursors.c.cursor.is_not(None),
                )
            ).first()
        return synced is not None or details.get("initial_sync_required") is False

    # -- transitions ---------------------------------------------------------------------

    async def move(
        self, app_user_id: str, to: Phase, *, force: bool = False, dry_run: bool = False
    ) -> bool:
        """Move a user to ``to``; returns False when already there. Raises GuardFailed."""
        state = self.status(app_user_id)
        if state.phase is to:
            return False
        reasons = self.blockers(app_user_id, to)
        if to is not Phase.LEGACY and _ORDER.index(to) < _ORDER.index(state.phase):
            reasons.append(f"{state.phase} -> {to} goes backwards; use rollback")
        if reasons and not (
            force
            and to is not Phase.LEGACY
            and all("parity" in r or "initial sync" in r for r in reasons)
        ):
            raise GuardFailed(app_user_id, to, reasons)
        if dry_run:
            return True
        if to is Phase.RETIRED:
            await self._retire_legacy(state)
        data: dict[str, Any] = {
            "legacy_provider": state.legacy_provider,
            "legacy_account_id": state.legacy_account_id,
            "target_account_id": state.target_account_id,
        }
        drop: tuple[str, ...] = ()
        if to is Phase.LEGACY:
            drop = ("parity_clean_since", "last_parity")
        self.runtime.update_routing(app_user_id, phase=str(to), data=data, drop=drop)
        self.runtime.store.audit(
            "migration",
            f"migration.{to}",
            app_user_id=app_user_id,
            account_id=state.target_account_id,
            detail={"from": str(state.phase), "to": str(to), "forced": bool(force and reasons)},
        )
        if to is Phase.LEGACY and state.phase is Phase.RETIRED:
            self.runtime.store.audit(
                "migration",
                "migration.legacy_reauth_required",
                app_user_id=app_user_id,
                account_id=state.legacy_account_id,
                detail={"reason": "legacy tokens were revoked at retirement"},
            )
        return True

    async def rollback(self, app_user_id: str, *, dry_run: bool = False) -> bool:
        """Back to legacy from any phase."""
        return await self.move(app_user_id, Phase.LEGACY, dry_run=dry_run)

    async def _retire_legacy(self, state: UserMigration) -> None:
        if state.legacy_account_id is None:
            return
        rt = self.runtime
        account = rt.store.get_account(state.legacy_account_id)
        if account is None or account.status is AccountStatus.REVOKED:
            return
        provider = rt.provider(account.provider)
        session = rt.session(account)
        for record in rt.store.list_channels(account_id=account.id):
            with contextlib.suppress(NotFound):
                await provider.unsubscribe(session, record.channel)
            rt.store.delete_channel(record.channel.provider, record.channel.id)
        tokens = await session.access_token()
        await provider.revoke_tokens(tokens)
        changed = rt.store.set_account_status(account.id, AccountStatus.REVOKED, reason="retired")
        if changed is not None:
            rt.host.notify_account_status_changed(changed[0], changed[1], "retired")

    async def bulk(
        self,
        users: Sequence[str],
        to: Phase,
        *,
        dry_run: bool = False,
        force: bool = False,
        progress: Callable[[str, str], None] | None = None,
    ) -> BulkResult:
        """Move many users; each step is idempotent, so a crashed run resumes by rerunning."""
        moved: list[str] = []
        already: list[str] = []
        refused: list[tuple[str, str]] = []
        for user in users:
            try:
                changed = await self.move(user, to, force=force, dry_run=dry_run)
            except GuardFailed as exc:
                refused.append((user, "; ".join(exc.reasons)))
                outcome = "refused"
            except CalbridgeError as exc:
                refused.append((user, str(exc)))
                outcome = "failed"
            else:
                (moved if changed else already).append(user)
                outcome = "moved" if changed else "already"
            if progress is not None:
                progress(user, outcome)
        return BulkResult(
            to=to,
            dry_run=dry_run,
            moved=tuple(moved),
            already=tuple(already),
            refused=tuple(refused),
        )

    # -- parity --------------------------------------------------------------------------

    async def _read(self, account_id: str, calendar_ref: str, window: TimeRange) -> list[Event]:
        rt = self.runtime
        account = rt.account(account_id)
        provider = rt.provider(account.provider)
        session = rt.session(account)
        calendars = await provider.list_calendars(session)
        cal = next((c for c in calendars if c.primary), calendars[0] if calendars else None)
        if calendar_ref != "primary":
            cal = next((c for c in calendars if calendar_ref in (c.id, c.name)), cal)
        if cal is None:
            return []
        out: list[Event] = []
        async for page in provider.list_events(session, cal.id, window):
            out.extend(page)
        return out

    async def check_parity(
        self,
        app_user_id: str,
        *,
        calendar: str = "primary",
        window: TimeRange | None = None,
        record: bool = True,
    ) -> ParityReport:
        """Compare the legacy and target views now; records clean-since for the guard."""
        state = self.status(app_user_id)
        if state.legacy_account_id is None or state.target_account_id is None:
            raise MigrationError(
                f"{app_user_id}: needs both a legacy and a {self.target} account to compare"
            )
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        window = window or TimeRange(
            start=now - dt.timedelta(days=self.window_days[0]),
            end=now + dt.timedelta(days=self.window_days[1]),
        )
        legacy = await self._read(state.legacy_account_id, calendar, window)
        target = await self._read(state.target_account_id, calendar, window)
        report = compare(legacy, target, window, now=now, grace=self.grace)
        if record:
            since = state.parity_clean_since
            if since is None:
                since = self.clock()
            if not report.clean:
                since = None
            summary = {
                "clean": report.clean,
                "at": self.clock(),
                "compared": report.compared,
                "missing": len(report.missing),
                "extra": len(report.extra),
                "different": len(report.different),
                "pending": report.pending,
            }
            self.runtime.update_routing(
                app_user_id, data={"parity_clean_since": since, "last_parity": summary}
            )
            self.runtime.store.audit(
                "migration", "migration.parity", app_user_id=app_user_id, detail=summary
            )
        return report
