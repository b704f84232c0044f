"""The per-account migration state machine.

::

    legacy ──start──▶ shadow ──dual──▶ dual ──cutover──▶ cutover ──retire──▶ retired
       ▲                 │               │                  │                  │
       └──────────────── rollback (from every phase) ◀──────┴──────────────────┘

* ``shadow``: legacy serves; reads are replayed against the target and compared.
* ``dual``: legacy is primary; every write is verified visible through the target.
* ``cutover``: the target serves; legacy is kept warm (tokens, channels) for rollback.
  Guarded: the target account is active, the target provider's initial sync of the user's
  calendars is complete (:data:`GuardKind.INITIAL_SYNC`), and parity has been clean for
  ``clean_period`` seconds (:data:`GuardKind.PARITY`).
* ``retired``: legacy channels stopped, legacy tokens revoked, the id map kept.

Every transition is a compare-and-set on the user's routing row, audited, and idempotent
(asking for the phase a user is already in does nothing), so bulk runs resume after a
crash by running again.

Guards are typed (:class:`Guard`: a :class:`GuardKind` and a message); ``force`` names
the kinds to skip, and only :data:`FORCEABLE` kinds (parity, initial sync) can be.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..errors import CalbridgeError, NotFound
from ..models import AccountStatus, Event, TimeRange
from ..router import Phase, cohort_bucket
from ._guards import (
    Guard,
    GuardKind,
    InitialSyncReporter,
    force_set,
    initial_sync_required,
    record_initial_sync,
)
from ._parity import ParityReport, compare

__all__ = [
    "BulkResult",
    "Force",
    "GuardFailed",
    "MigrationError",
    "Migrator",
    "PlanRow",
    "UserMigration",
]

_ORDER = [Phase.LEGACY, Phase.SHADOW, Phase.DUAL, Phase.CUTOVER, Phase.RETIRED]

#: what ``force`` accepts: guard kinds (or their names) to skip; True means every
#: forceable kind (:data:`~calbridge.migration.BARE_FORCE`), False none
Force = bool | Iterable[GuardKind | str] | None


class MigrationError(CalbridgeError):
    """A migration step cannot be taken."""


class GuardFailed(MigrationError):
    """Guards refused the step; ``guards`` say which (kind) and why (message)."""

    def __init__(self, app_user_id: str, to: Phase, guards: Sequence[Guard]) -> None:
        self.app_user_id = app_user_id
        self.to = to
        self.guards = tuple(guards)
        super().__init__(f"{app_user_id}: cannot move to {to}: " + "; ".join(self.reasons))

    @property
    def kinds(self) -> frozenset[GuardKind]:
        """The kinds of the refusing guards."""
        return frozenset(g.kind for g in self.guards)

    @property
    def reasons(self) -> tuple[str, ...]:
        """The guards' messages (for people; decisions use :attr:`kinds`)."""
        return tuple(g.message for g in self.guards)


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
    #: (user, reason) of every user not moved
    refused: tuple[tuple[str, str], ...] = ()
    #: the refusing guards of users refused by guards
    guards: Mapping[str, tuple[Guard, ...]] = attrs.field(factory=dict, hash=False)
    #: the guards skipped by ``force`` for users moved although they failed
    forced: Mapping[str, tuple[Guard, ...]] = attrs.field(factory=dict, hash=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "to": str(self.to),
            "dry_run": self.dry_run,
            "moved": list(self.moved),
            "already": list(self.already),
            "refused": [
                {
                    "user": u,
                    "reason": r,
                    "guards": [g.as_dict() for g in self.guards.get(u, ())],
                }
                for u, r in self.refused
            ],
            "forced": {u: [g.as_dict() for g in gs] for u, gs in self.forced.items()},
        }


@attrs.frozen
class _Outcome:
    changed: bool
    forced: tuple[Guard, ...] = ()


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
        """Why ``to`` cannot be entered now (empty when it can), from stored state only.

        The messages of :meth:`stored_guards`; :meth:`guards` also asks the target
        provider about its initial sync.
        """
        return [g.message for g in self.stored_guards(app_user_id, to)]

    def stored_guards(self, app_user_id: str, to: Phase) -> list[Guard]:
        """The guards refusing ``to`` now, judged from the store alone (no provider call)."""
        state = self.status(app_user_id)
        facts = self.runtime.user_facts(app_user_id)
        found = self._phase_guards(state, facts, to)
        target = facts.account(self.target)
        if to is Phase.CUTOVER and target is not None and target.active:
            sync = self._stored_initial_sync_guard(target.account_id)
            if sync is not None:
                found.append(sync)
        return found

    async def guards(self, app_user_id: str, to: Phase, *, record: bool = True) -> list[Guard]:
        """The guards refusing ``to`` now (empty when it may be entered).

        For ``cutover`` the target's initial sync counts as complete once it was observed
        complete (the provider's completion notification, or an earlier read); otherwise a
        provider that reports it (:class:`InitialSyncReporter`, e.g. Cronofy's userinfo) is
        asked now, and with ``record`` the answer is stored.
        """
        state = self.status(app_user_id)
        facts = self.runtime.user_facts(app_user_id)
        found = self._phase_guards(state, facts, to)
        target = facts.account(self.target)
        if to is Phase.CUTOVER and target is not None and target.active:
            sync = await self._initial_sync_guard(target.account_id, record=record)
            if sync is not None:
                found.append(sync)
        return found

    def _phase_guards(self, state: UserMigration, facts: Any, to: Phase) -> list[Guard]:
        """Every guard but the initial sync's, in the order people read them."""
        if to is Phase.LEGACY:
            return []
        found: list[Guard] = []
        target = facts.account(self.target)
        if state.legacy_account_id is None and state.phase is Phase.LEGACY:
            found.append(Guard(GuardKind.NO_LEGACY_ACCOUNT, "the user has no legacy account"))
        if target is None:
            found.append(
                Guard(GuardKind.NO_AUTHORIZATION, f"the user has not authorised {self.target} yet")
            )
        elif not target.active:
            found.append(
                Guard(
                    GuardKind.AUTHORIZATION_INACTIVE,
                    f"the {self.target} account is {target.status}",
                )
            )
        current = _ORDER.index(state.phase)
        wanted = _ORDER.index(to)
        if wanted > current + 1:
            found.append(
                Guard(
                    GuardKind.SKIPS_PHASE,
                    f"{state.phase} -> {to} skips a phase; go through {_ORDER[current + 1]} first",
                )
            )
        elif wanted < current:
            found.append(
                Guard(GuardKind.BACKWARDS, f"{state.phase} -> {to} goes backwards; use rollback")
            )
        if to is Phase.CUTOVER and target is not None:
            since = state.parity_clean_since
            if since is None:
                found.append(
                    Guard(
                        GuardKind.PARITY,
                        "parity has not been clean yet (run `calbridge migrate diff`)",
                    )
                )
            elif self.clock() - since < self.clean_period:
                left = self.clean_period - (self.clock() - since)
                found.append(
                    Guard(GuardKind.PARITY, f"parity must stay clean for {left:.0f} s more")
                )
        return found

    def _syncing(self, detail: str = "") -> Guard:
        return Guard(
            GuardKind.INITIAL_SYNC,
            f"the {self.target} initial sync is not complete" + (f" ({detail})" if detail else ""),
        )

    def _stored_initial_sync_guard(self, account_id: str) -> Guard | None:
        """The initial-sync guard from the account's details (and, for providers that do
        not report their initial sync, from whether calbridge has synced the account)."""
        required = initial_sync_required(self.runtime.store.account_details(account_id))
        if required is False:
            return None
        if required is True:
            return self._syncing(f"{self.target} reports its first sync of the user as running")
        if isinstance(self.runtime.provider(self.target), InitialSyncReporter):
            return self._syncing(f"not yet reported by {self.target}")
        return None if self._synced_once(account_id) else self._syncing()

    async def _initial_sync_guard(self, account_id: str, *, record: bool) -> Guard | None:
        """Stored completion holds; else ask a reporting provider (and store its answer)."""
        rt = self.runtime
        if initial_sync_required(rt.store.account_details(account_id)) is False:
            return None
        provider = rt.provider(self.target)
        if not isinstance(provider, InitialSyncReporter):
            return self._stored_initial_sync_guard(account_id)
        asked_at = self.clock()
        try:
            required = await provider.initial_sync_required(rt.session(account_id))
        except CalbridgeError as exc:
            return self._syncing(f"could not ask {self.target}: {type(exc).__name__}: {exc}")
        if required is None:
            return self._stored_initial_sync_guard(account_id)
        if record:
            from ..store import write

            with write(rt.engine) as conn:
                record_initial_sync(
                    conn, account_id, required=required, source="userinfo", at=asked_at
                )
        if required:
            return self._syncing(f"{self.target} reports its first sync of the user as running")
        return None

    def _synced_once(self, account_id: str) -> bool:
        from ..store import read, schema

        with read(self.runtime.engine) as conn:
            synced = conn.execute(
                schema.sync_cursors.select().where(
                    schema.sync_cursors.c.account_id == account_id,
                    schema.sync_cursors.c.cursor.is_not(None),
                )
            ).first()
        return synced is not None

    # -- transitions ---------------------------------------------------------------------

    async def move(
        self, app_user_id: str, to: Phase, *, force: Force = (), dry_run: bool = False
    ) -> bool:
        """Move a user to ``to``; returns False when already there.

        ``force`` names the guard kinds to skip (only :data:`FORCEABLE` ones; True means
        all of them). Raises GuardFailed with the guards that still refuse; ValueError
        when ``force`` names a kind that cannot be forced.
        """
        outcome = await self._move(app_user_id, to, force_set(force), dry_run=dry_run)
        return outcome.changed

    async def _move(
        self, app_user_id: str, to: Phase, skip: frozenset[GuardKind], *, dry_run: bool
    ) -> _Outcome:
        state = self.status(app_user_id)
        if state.phase is to:
            return _Outcome(changed=False)
        found = await self.guards(app_user_id, to, record=not dry_run)
        refusing = [g for g in found if g.kind not in skip]
        if refusing:
            raise GuardFailed(app_user_id, to, refusing)
        forced = tuple(g for g in found if g.kind in skip)
        if dry_run:
            return _Outcome(changed=True, forced=forced)
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
            detail={
                "from": str(state.phase),
                "to": str(to),
                "forced": bool(forced),
                "skipped_guards": [str(g.kind) for g in forced],
            },
        )
        if to is Phase.LEGACY and state.phase is Phase.RETIRED:
            self.runtime.store.audit(
                "migration",
                "migration.legacy_reauth_required",
                app_user_id=app_user_id,
                account_id=state.legacy_account_id,
                detail={"reason": "legacy tokens were revoked at retirement"},
            )
        return _Outcome(changed=True, forced=forced)

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
        force: Force = (),
        progress: Callable[[str, str], None] | None = None,
    ) -> BulkResult:
        """Move many users; each step is idempotent, so a crashed run resumes by rerunning.

        ``force`` as for :meth:`move` (checked before any user is touched).
        """
        skip = force_set(force)
        moved: list[str] = []
        already: list[str] = []
        refused: list[tuple[str, str]] = []
        guards: dict[str, tuple[Guard, ...]] = {}
        forced: dict[str, tuple[Guard, ...]] = {}
        for user in users:
            try:
                result = await self._move(user, to, skip, dry_run=dry_run)
            except GuardFailed as exc:
                refused.append((user, "; ".join(exc.reasons)))
                guards[user] = exc.guards
                outcome = "refused"
            except CalbridgeError as exc:
                refused.append((user, str(exc)))
                outcome = "failed"
            else:
                (moved if result.changed else already).append(user)
                if result.forced:
                    forced[user] = result.forced
                outcome = "moved" if result.changed else "already"
            if progress is not None:
                progress(user, outcome)
        return BulkResult(
            to=to,
            dry_run=dry_run,
            moved=tuple(moved),
            already=tuple(already),
            refused=tuple(refused),
            guards=guards,
            forced=forced,
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
