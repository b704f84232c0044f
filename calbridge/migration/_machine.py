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
crash by running again. The guards are checked against one read of the row and the new
phase is written only if the row still has that read's version, together with the audit
entry (one transaction): of two concurrent runs exactly one moves the user, the other
gets :class:`ConcurrentTransition` and writes nothing. Retirement, which calls the legacy
provider, first claims the user in the row (a compare-and-set too) so a second run does
not revoke anything.

Guards are typed (:class:`Guard`: a :class:`GuardKind` and a message); ``force`` names
the kinds to skip, and only :data:`FORCEABLE` kinds (parity, initial sync) can be.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .._budget import background_calls
from ..errors import CalbridgeError, NotFound, NotSupported, RateLimited
from ..models import AccountStatus, Event, EventTime, TimeRange
from ..router import Phase, UserFacts, cohort_bucket
from ..store import Connection, RoutingState, StaleWriteError, offload
from ._guards import (
    Guard,
    GuardKind,
    InitialSyncReporter,
    force_set,
    initial_sync_required,
    record_initial_sync,
)
from ._parity import ParityReport, compare

if TYPE_CHECKING:
    from .._runtime import Runtime

__all__ = [
    "BulkResult",
    "ConcurrentTransition",
    "Force",
    "GuardFailed",
    "MigrationError",
    "Migrator",
    "ParityResult",
    "PlanRow",
    "UserMigration",
]

_ORDER = [Phase.LEGACY, Phase.SHADOW, Phase.DUAL, Phase.CUTOVER, Phase.RETIRED]
#: how often a step re-reads and re-checks when its compare-and-set lost to a write that
#: left the phase alone (a parity record, the router's last provider)
_ATTEMPTS = 5
#: the routing-row data key of a running retirement (its claim)
_CLAIM = "transition"

#: what ``force`` accepts: guard kinds (or their names) to skip; True means every
#: forceable kind (:data:`~calbridge.migration.BARE_FORCE`), False none
Force = bool | Iterable[GuardKind | str] | None

T = TypeVar("T")

#: a bulk run's per-user retries after a 429 whose Retry-After is at most ``max_wait``
RATE_LIMIT_RETRIES = 2
#: the longest Retry-After a bulk run waits out for one user (longer: ``rate_limited``)
RATE_LIMIT_MAX_WAIT = 60.0


class MigrationError(CalbridgeError):
    """A migration step cannot be taken."""


#: guards that refuse whatever a provider would answer: checked first, no provider call
_STRUCTURAL: frozenset[GuardKind] = frozenset(
    {
        GuardKind.NO_LEGACY_ACCOUNT,
        GuardKind.NO_AUTHORIZATION,
        GuardKind.AUTHORIZATION_INACTIVE,
        GuardKind.SKIPS_PHASE,
        GuardKind.BACKWARDS,
    }
)


class GuardFailed(MigrationError):
    """Guards refused the step; ``guards`` say which (kind) and why (message)."""

    def __init__(
        self, app_user_id: str, to: Phase, guards: Sequence[Guard], *, held: bool = False
    ) -> None:
        self.app_user_id = app_user_id
        self.to = to
        self.guards = tuple(guards)
        #: a refused ``start`` put the user under migration at legacy (the one thing it
        #: wrote): authorising the target later does not route them there by policy
        self.held = held
        text = f"{app_user_id}: cannot move to {to}: " + "; ".join(self.reasons)
        super().__init__(text + ("; held on legacy, now under migration" if held else ""))

    @property
    def kinds(self) -> frozenset[GuardKind]:
        """The kinds of the refusing guards."""
        return frozenset(g.kind for g in self.guards)

    @property
    def reasons(self) -> tuple[str, ...]:
        """The guards' messages (for people; decisions use :attr:`kinds`)."""
        return tuple(g.message for g in self.guards)


class ConcurrentTransition(MigrationError):
    """Another run changed the user's migration phase (or is retiring the user) between
    this run's guard check and its write; this run wrote nothing.

    ``found`` is the phase the other run left; :attr:`settled` says whether that is the
    phase this run wanted (then the step is done, by someone else).
    """

    def __init__(
        self, app_user_id: str, to: Phase, *, expected: Phase, found: Phase, detail: str = ""
    ) -> None:
        self.app_user_id = app_user_id
        self.to = to
        self.expected = expected
        self.found = found
        what = detail or (
            f"moved by someone else meanwhile ({expected} -> {found})"
            if found is not expected
            else "its routing row keeps changing"
        )
        super().__init__(f"{app_user_id}: cannot move to {to}: {what}")

    @property
    def settled(self) -> bool:
        """True when the other run left the user in the wanted phase."""
        return self.found is self.to


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
    #: the routing row carries a phase: the phase routes the user, not the policy rules
    #: (:attr:`calbridge.router.UserFacts.under_migration`); ``phase`` reads ``legacy``
    #: for a user never touched by the migration too
    under_migration: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "app_user_id": self.app_user_id,
            "phase": str(self.phase),
            "under_migration": self.under_migration,
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
    under_migration: bool = False


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
    #: refused users whose phase another run changed first (this run wrote nothing)
    conflicts: tuple[str, ...] = ()
    #: refused users whose provider answered 429 (after the bounded waits): rerun them
    rate_limited: tuple[str, ...] = ()
    #: refused users whose provider (or store) failed: rerun them
    errors: tuple[str, ...] = ()
    #: users refused by ``start`` whom it put under migration at legacy (held there)
    held: tuple[str, ...] = ()

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
                    "conflict": u in self.conflicts,
                    "rate_limited": u in self.rate_limited,
                    "error": u in self.errors,
                    "held": u in self.held,
                }
                for u, r in self.refused
            ],
            "forced": {u: [g.as_dict() for g in gs] for u, gs in self.forced.items()},
        }


@attrs.frozen(kw_only=True)
class ParityResult:
    """One user's outcome in :meth:`Migrator.check_parity_many`.

    ``status``: ``clean`` / ``differs`` (compared now: ``report``), ``skipped`` (compared
    within ``skip_checked_since``: ``last_parity`` is that comparison's summary),
    ``rate_limited`` (the provider answered 429; ``retry_after`` when it said) or
    ``error`` (a provider or migration error: ``error``).
    """

    app_user_id: str
    status: str
    report: ParityReport | None = None
    last_parity: Mapping[str, Any] | None = None
    error: str | None = None
    retry_after: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the report's keys (when compared) plus ``app_user_id``/``status``."""
        out: dict[str, Any] = {"app_user_id": self.app_user_id, "status": self.status}
        if self.report is not None:
            out.update(self.report.as_dict())
        if self.last_parity is not None:
            out["last_parity"] = dict(self.last_parity)
        if self.error is not None:
            out["error"] = self.error
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


@attrs.frozen
class _Outcome:
    changed: bool
    forced: tuple[Guard, ...] = ()


@attrs.frozen
class _Snapshot:
    """One read of a user's routing row and facts; a step's write is conditional on it."""

    routing: RoutingState | None
    facts: UserFacts
    state: UserMigration

    @property
    def version(self) -> int:
        """The routing row's version (0: no row yet)."""
        return self.routing.version if self.routing is not None else 0

    @property
    def data(self) -> dict[str, Any]:
        """The routing row's data."""
        return dict(self.routing.data) if self.routing is not None else {}

    def claim(self) -> dict[str, Any] | None:
        """The running retirement's claim, if any."""
        value = self.data.get(_CLAIM)
        return value if isinstance(value, dict) else None


@attrs.define
class Migrator:
    """Moves users from their legacy provider to the target provider, and back.

    Attributes:
        runtime: the bridge runtime (:attr:`calbridge.CalBridge.runtime`).
        clean_period: seconds parity must have been clean before cutover.
        grace: seconds a change may take to propagate before parity counts it.
        window_days: the parity window, days before and after now.
        claim_ttl: seconds another run's retirement claim holds off this one.
    """

    runtime: Runtime
    clean_period: float = 24 * 3600.0
    grace: float = 600.0
    window_days: tuple[int, int] = (7, 60)
    clock: Callable[[], float] = time.time
    #: seconds a retirement's claim holds off other runs (a crashed run's claim expires)
    claim_ttl: float = 600.0
    #: how bulk runs wait out a provider's Retry-After (tests pass a fake)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def _patient(
        self, call: Callable[[], Awaitable[T]], *, retries: int, max_wait: float
    ) -> T:
        """``call()``, waiting out a 429's Retry-After (at most ``max_wait`` s) and calling
        again, at most ``retries`` times; a 429 without Retry-After, with a longer one or
        past the retries raises :class:`RateLimited` to the caller."""
        attempt = 0
        while True:
            try:
                return await call()
            except RateLimited as exc:
                wait = exc.retry_after
                if attempt >= retries or wait is None or wait > max_wait:
                    raise
                attempt += 1
                await self.sleep(wait)

    @property
    def target(self) -> str:
        """The provider users move to."""
        return str(self.runtime.config.target_provider)

    # -- reading state -------------------------------------------------------------------

    def status(self, app_user_id: str) -> UserMigration:
        """The user's migration state (``legacy`` when never started)."""
        return self._snapshot(app_user_id).state

    def _snapshot(self, app_user_id: str) -> _Snapshot:
        """The routing row (phase, version: what a step compares and sets) and the facts."""
        routing = self.runtime.store.routing.get_routing(app_user_id)
        facts = self.runtime.user_facts(app_user_id)
        data = dict(routing.data) if routing is not None else {}
        legacy = data.get("legacy_account_id")
        if legacy is None:
            acct = next((a for a in facts.accounts if a.provider != self.target), None)
            legacy = acct.account_id if acct else None
        target = next(
            (a for a in facts.accounts if a.provider == self.target and a.active), None
        ) or next((a for a in facts.accounts if a.provider == self.target), None)
        phase = Phase(routing.phase) if routing is not None and routing.phase else Phase.LEGACY
        state = UserMigration(
            app_user_id=app_user_id,
            phase=phase,
            legacy_provider=data.get("legacy_provider") or self._provider_of(facts, legacy),
            legacy_account_id=legacy,
            target_account_id=target.account_id if target else None,
            parity_clean_since=data.get("parity_clean_since"),
            last_parity=data.get("last_parity"),
            under_migration=routing is not None and bool(routing.phase),
        )
        return _Snapshot(routing=routing, facts=facts, state=state)

    @staticmethod
    def _provider_of(facts: Any, account_id: str | None) -> str | None:
        return next((a.provider for a in facts.accounts if a.account_id == account_id), None)

    def users(self) -> list[str]:
        """Every app user that holds a legacy (non-target) account."""
        return sorted(
            {
                a.app_user_id
                for a in self.runtime.store.accounts.list_accounts()
                if a.provider != self.target
            }
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
        """Readiness of each user; users without an active target authorization wait.

        A user not yet under migration is routed by the policy rules (e.g. to the target
        as soon as they authorise it): the detail says so.
        """
        rows = []
        for user in users:
            state = self.status(user)
            facts = self.runtime.user_facts(user)
            target = facts.account(self.target)
            detail = ""
            if state.phase is Phase.RETIRED:
                readiness = "done"
            elif state.legacy_account_id is None:
                readiness = "no_legacy"
            elif target is None or not target.active:
                readiness = "waiting_reauth"
                detail = (
                    "not yet re-authorised through " + self.target
                    if target is None
                    else (f"{self.target} account is {target.status}")
                )
            elif state.phase is Phase.LEGACY:
                readiness = "ready"
            else:
                readiness = "in_progress"
            if not state.under_migration and state.legacy_account_id is not None:
                note = "not under migration yet: policy rules route this user"
                detail = f"{detail}; {note}" if detail else note
            rows.append(
                PlanRow(
                    app_user_id=user,
                    phase=state.phase,
                    readiness=readiness,
                    detail=detail,
                    under_migration=state.under_migration,
                )
            )
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
        snap = self._snapshot(app_user_id)
        state, facts = snap.state, snap.facts
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
        return await self._check(await offload(self._snapshot, app_user_id), to, record=record)

    async def _check(
        self,
        snap: _Snapshot,
        to: Phase,
        *,
        record: bool,
        skip: frozenset[GuardKind] = frozenset(),
    ) -> list[Guard]:
        """The guards refusing ``to``. The provider is asked about the initial sync only
        when no structural guard (phase order, authorization) refuses already: such a
        step makes no provider call and writes nothing. Next to a parity guard it is
        still asked, so the operator sees every blocker at once (its answer, an observed
        fact like a sync cursor, is recorded when ``record``)."""
        found = self._phase_guards(snap.state, snap.facts, to)
        if any(g.kind in _STRUCTURAL and g.kind not in skip for g in found):
            return found
        target = snap.facts.account(self.target)
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
        required = initial_sync_required(self.runtime.store.accounts.account_details(account_id))
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
        details = await offload(rt.store.accounts.account_details, account_id)
        if initial_sync_required(details) is False:
            return None
        provider = rt.provider(self.target)
        if not isinstance(provider, InitialSyncReporter):
            return await offload(self._stored_initial_sync_guard, account_id)
        asked_at = self.clock()
        try:
            session = await rt.asession(account_id)
            required = await provider.initial_sync_required(session)
        except CalbridgeError as exc:
            return self._syncing(f"could not ask {self.target}: {type(exc).__name__}: {exc}")
        if required is None:
            return await offload(self._stored_initial_sync_guard, account_id)
        if record:
            await offload(self._record_initial_sync, account_id, required, asked_at)
        if required:
            return self._syncing(f"{self.target} reports its first sync of the user as running")
        return None

    def _record_initial_sync(self, account_id: str, required: bool, at: float) -> None:
        record_initial_sync(
            self.runtime.store, account_id, required=required, source="userinfo", at=at
        )

    def _synced_once(self, account_id: str) -> bool:
        return self.runtime.store.events.synced_once(account_id)

    # -- transitions ---------------------------------------------------------------------

    async def move(
        self, app_user_id: str, to: Phase, *, force: Force = (), dry_run: bool = False
    ) -> bool:
        """Move a user to ``to``; returns False when already there.

        ``force`` names the guard kinds to skip (only :data:`FORCEABLE` ones; True means
        all of them). Raises GuardFailed with the guards that still refuse; ValueError
        when ``force`` names a kind that cannot be forced; ConcurrentTransition when
        another run changed the user's phase after this one checked the guards (this run
        then wrote nothing; ``settled`` says the user is where it wanted anyway).
        """
        outcome = await self._move(app_user_id, to, force_set(force), dry_run=dry_run)
        return outcome.changed

    async def _move(
        self, app_user_id: str, to: Phase, skip: frozenset[GuardKind], *, dry_run: bool
    ) -> _Outcome:
        """Check the guards against one read of the routing row, then write the new phase
        only if that row is unchanged (compare-and-set on its version, the audit entry in
        the same transaction). A lost race re-reads: the phase moved means another run won
        (ConcurrentTransition, nothing written); anything else changed means check again.
        """
        first: Phase | None = None
        for _ in range(_ATTEMPTS):
            snap = await offload(self._snapshot, app_user_id)
            phase = snap.state.phase
            if first is None:
                first = phase
            elif phase is not first:
                raise ConcurrentTransition(app_user_id, to, expected=first, found=phase)
            self._refuse_if_claimed(snap, to)
            if phase is to:
                if to is not Phase.LEGACY or not self._enrollable(snap):
                    return _Outcome(changed=False)
                # rollback of a user the migration never touched: hold them on legacy
                try:
                    return await self._enroll_step(snap, dry_run=dry_run)
                except StaleWriteError:
                    continue
            found = await self._check(snap, to, record=not dry_run, skip=skip)
            refusing = [g for g in found if g.kind not in skip]
            if refusing:
                held = False
                if to is Phase.SHADOW and not dry_run and self._enrollable(snap):
                    # a refused start still puts the user under migration, at legacy:
                    # authorising the target later does not route them there by policy
                    # (said in the refusal: the one write of a refused step)
                    with contextlib.suppress(StaleWriteError):
                        await offload(self._commit, snap, Phase.LEGACY, (), enrolling="start")
                        held = True
                raise GuardFailed(app_user_id, to, refusing, held=held)
            forced = tuple(g for g in found if g.kind in skip)
            if dry_run:
                return _Outcome(changed=True, forced=forced)
            try:
                if to is Phase.RETIRED:
                    await self._retire(snap, forced)
                else:
                    await offload(self._commit, snap, to, forced)
            except StaleWriteError:
                continue
            return _Outcome(changed=True, forced=forced)
        assert first is not None
        raise ConcurrentTransition(app_user_id, to, expected=first, found=first)

    def _refuse_if_claimed(self, snap: _Snapshot, to: Phase) -> None:
        """Another run is retiring the user (its claim is younger than ``claim_ttl``)."""
        claim = snap.claim()
        if claim is None:
            return
        at = claim.get("at")
        if isinstance(at, int | float) and self.clock() - at < self.claim_ttl:
            raise ConcurrentTransition(
                snap.state.app_user_id,
                to,
                expected=snap.state.phase,
                found=snap.state.phase,
                detail=f"another run is retiring the user (since {at:.0f}); try again later",
            )

    def _commit(
        self,
        snap: _Snapshot,
        to: Phase,
        forced: Sequence[Guard],
        *,
        enrolling: str | None = None,
    ) -> None:
        """Write ``to`` if the routing row is still at ``snap``'s version, with its audit
        entries, in one transaction. Raises StaleWriteError (nothing written) otherwise.

        ``enrolling`` (what put the user under migration: "enroll", "start", "rollback")
        audits ``migration.enrolled`` instead of a transition.
        """
        from ..store import RoutingState, write

        rt, state = self.runtime, snap.state
        data = snap.data
        data.pop(_CLAIM, None)
        data.update(
            {
                "legacy_provider": state.legacy_provider,
                "legacy_account_id": state.legacy_account_id,
                "target_account_id": state.target_account_id,
            }
        )
        if to is Phase.LEGACY:
            for key in ("parity_clean_since", "last_parity"):
                data.pop(key, None)
        row = RoutingState(
            app_user_id=state.app_user_id,
            phase=str(to),
            primary_account_id=snap.routing.primary_account_id if snap.routing else None,
            secondary_account_id=snap.routing.secondary_account_id if snap.routing else None,
            data=data,
        )
        if enrolling is not None:
            action = "migration.enrolled"
            detail: dict[str, Any] = {"from": None, "to": str(to), "by": enrolling}
        else:
            action = f"migration.{to}"
            detail = {
                "from": str(state.phase),
                "to": str(to),
                "forced": bool(forced),
                "skipped_guards": [str(g.kind) for g in forced],
            }
        with write(rt.engine) as conn:
            self._set_routing(row, snap.version, conn)
            rt.store.audit_log.audit(
                "migration",
                action,
                app_user_id=state.app_user_id,
                account_id=state.target_account_id,
                detail=detail,
                conn=conn,
            )
            if to is Phase.LEGACY and state.phase is Phase.RETIRED:
                rt.store.audit_log.audit(
                    "migration",
                    "migration.legacy_reauth_required",
                    app_user_id=state.app_user_id,
                    account_id=state.legacy_account_id,
                    detail={"reason": "legacy tokens were revoked at retirement"},
                    conn=conn,
                )
        rt.router.invalidate(state.app_user_id)

    def _set_routing(self, row: Any, expected_version: int, conn: Connection) -> None:
        """The routing row's compare-and-set; a concurrent first insert also loses
        (:class:`StaleWriteError`)."""
        self.runtime.store.routing.set_routing(row, expected_version=expected_version, conn=conn)

    def _write_claim(self, snap: _Snapshot, claim: dict[str, Any] | None) -> Any:
        """Set (or, with None, clear) the retirement claim, compare-and-set on ``snap``."""
        from ..store import RoutingState, write

        data = snap.data
        if claim is None:
            data.pop(_CLAIM, None)
        else:
            data[_CLAIM] = claim
        row = RoutingState(
            app_user_id=snap.state.app_user_id,
            phase=snap.routing.phase if snap.routing else "",
            primary_account_id=snap.routing.primary_account_id if snap.routing else None,
            secondary_account_id=snap.routing.secondary_account_id if snap.routing else None,
            data=data,
        )
        with write(self.runtime.engine) as conn:
            self._set_routing(row, snap.version, conn)

    async def _retire(self, snap: _Snapshot, forced: Sequence[Guard]) -> None:
        """Retirement calls the legacy provider (channels, token revocation), which cannot
        happen inside the compare-and-set: the run first claims the user (a compare-and-set
        writing a claim into the routing row; a second run then refuses), retires legacy,
        and commits the phase only while its claim still stands."""
        user = snap.state.app_user_id
        token = uuid.uuid4().hex
        claim = {"to": str(Phase.RETIRED), "token": token, "at": self.clock()}
        await offload(self._write_claim, snap, claim)
        try:
            await self._retire_legacy(snap.state)
        except BaseException:
            await asyncio.shield(offload(self._release_claim, user, token))
            raise
        for _ in range(_ATTEMPTS):
            fresh = await offload(self._snapshot, user)
            mine = (fresh.claim() or {}).get("token") == token
            if fresh.state.phase is not snap.state.phase or not mine:
                raise ConcurrentTransition(
                    user,
                    Phase.RETIRED,
                    expected=snap.state.phase,
                    found=fresh.state.phase,
                    detail="another run took over the retirement",
                )
            try:
                await offload(self._commit, fresh, Phase.RETIRED, forced)
            except StaleWriteError:
                continue
            return
        await offload(self._release_claim, user, token)
        raise ConcurrentTransition(
            user, Phase.RETIRED, expected=snap.state.phase, found=snap.state.phase
        )

    def _release_claim(self, app_user_id: str, token: str) -> None:
        """Best effort: drop this run's claim so a rerun need not wait for ``claim_ttl``."""
        for _ in range(_ATTEMPTS):
            snap = self._snapshot(app_user_id)
            if (snap.claim() or {}).get("token") != token:
                return
            try:
                self._write_claim(snap, None)
            except StaleWriteError:
                continue
            except Exception:  # the claim then expires after claim_ttl
                return
            return

    async def enroll(self, app_user_id: str, *, dry_run: bool = False) -> bool:
        """Put the user under migration at ``legacy`` without moving them; False when
        already under migration (whatever their phase). From now on the phase, not the
        policy rules, routes the user: legacy serves until ``start`` moves them.

        Raises GuardFailed (``no-legacy-account``) for a user with nothing to migrate from.
        """
        return (await self._enroll(app_user_id, dry_run=dry_run)).changed

    async def _enroll(self, app_user_id: str, *, dry_run: bool) -> _Outcome:
        for _ in range(_ATTEMPTS):
            snap = await offload(self._snapshot, app_user_id)
            if snap.state.under_migration:
                return _Outcome(changed=False)
            if not self._enrollable(snap):
                raise GuardFailed(
                    app_user_id,
                    Phase.LEGACY,
                    [Guard(GuardKind.NO_LEGACY_ACCOUNT, "the user has no legacy account")],
                )
            try:
                return await self._enroll_step(snap, dry_run=dry_run, by="enroll")
            except StaleWriteError:
                continue
        raise ConcurrentTransition(
            app_user_id, Phase.LEGACY, expected=Phase.LEGACY, found=Phase.LEGACY
        )

    async def _enroll_step(
        self, snap: _Snapshot, *, dry_run: bool, by: str = "rollback"
    ) -> _Outcome:
        if not dry_run:
            await offload(self._commit, snap, Phase.LEGACY, (), enrolling=by)
        return _Outcome(changed=True)

    @staticmethod
    def _enrollable(snap: _Snapshot) -> bool:
        return not snap.state.under_migration and snap.state.legacy_account_id is not None

    async def rollback(self, app_user_id: str, *, dry_run: bool = False) -> bool:
        """Back to legacy from any phase; a user not under migration is put under it at
        legacy (held there, see :meth:`enroll`)."""
        return await self.move(app_user_id, Phase.LEGACY, dry_run=dry_run)

    async def _retire_legacy(self, state: UserMigration) -> None:
        account_id = state.legacy_account_id
        if account_id is None:
            return
        rt = self.runtime
        account = await offload(rt.store.accounts.get_account, account_id)
        if account is None or account.status is AccountStatus.REVOKED:
            return
        provider = rt.provider(account.provider)
        session = rt.session(account)
        for record in await offload(rt.store.channels.list_channels, account_id=account.id):
            if record.health != "polling":  # the polling pseudo-channel is not the provider's
                with contextlib.suppress(NotFound, NotSupported):
                    await provider.unsubscribe(session, record.channel)
            await offload(
                rt.store.channels.delete_channel, record.channel.provider, record.channel.id
            )
        tokens = await session.access_token()
        with contextlib.suppress(NotSupported):  # e.g. an app password: nothing to revoke
            await provider.revoke_tokens(tokens)
        changed = await offload(
            rt.store.accounts.set_account_status,
            account_id,
            AccountStatus.REVOKED,
            reason="retired",
        )
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
        report: Callable[[dict[str, Any]], None] | None = None,
        retries: int = RATE_LIMIT_RETRIES,
        max_wait: float = RATE_LIMIT_MAX_WAIT,
    ) -> BulkResult:
        """Move many users; each step is idempotent, so a crashed run resumes by rerunning.

        ``force`` as for :meth:`move` (checked before any user is touched). One user's
        429 or provider error never stops the run: a 429 with a Retry-After of at most
        ``max_wait`` seconds is waited out and the user tried again (``retries`` times),
        else the user is refused as ``rate_limited`` (or ``error``) and the run goes on.
        ``progress(user, outcome)`` and ``report(entry)`` are called as each user
        finishes; ``entry`` is ``{user, outcome, reason, guards, forced}`` (outcome:
        moved, already, refused, conflict, rate_limited, error).
        """
        skip = force_set(force)

        async def step(user: str) -> _Outcome:
            return await self._move(user, to, skip, dry_run=dry_run)

        return await self._bulk(
            users,
            to,
            step,
            dry_run=dry_run,
            progress=progress,
            report=report,
            retries=retries,
            max_wait=max_wait,
        )

    async def enroll_many(
        self,
        users: Sequence[str],
        *,
        dry_run: bool = False,
        progress: Callable[[str, str], None] | None = None,
        report: Callable[[dict[str, Any]], None] | None = None,
    ) -> BulkResult:
        """:meth:`enroll` each user (``moved``: newly under migration); ``progress`` and
        ``report`` as for :meth:`bulk`."""

        async def step(user: str) -> _Outcome:
            return await self._enroll(user, dry_run=dry_run)

        return await self._bulk(
            users, Phase.LEGACY, step, dry_run=dry_run, progress=progress, report=report
        )

    async def _bulk(
        self,
        users: Sequence[str],
        to: Phase,
        step: Callable[[str], Awaitable[_Outcome]],
        *,
        dry_run: bool,
        progress: Callable[[str, str], None] | None,
        report: Callable[[dict[str, Any]], None] | None = None,
        retries: int = RATE_LIMIT_RETRIES,
        max_wait: float = RATE_LIMIT_MAX_WAIT,
    ) -> BulkResult:
        moved: list[str] = []
        already: list[str] = []
        refused: list[tuple[str, str]] = []
        guards: dict[str, tuple[Guard, ...]] = {}
        forced: dict[str, tuple[Guard, ...]] = {}
        conflicts: list[str] = []
        limited: list[str] = []
        errors: list[str] = []
        held: list[str] = []
        for user in users:
            try:
                result = await self._patient(
                    functools.partial(step, user), retries=retries, max_wait=max_wait
                )
            except GuardFailed as exc:
                refused.append((user, "; ".join(exc.reasons)))
                guards[user] = exc.guards
                if exc.held:
                    held.append(user)
                outcome = "refused"
            except ConcurrentTransition as exc:
                if exc.settled:  # another run moved the user where this one wanted
                    already.append(user)
                    outcome = "already"
                else:
                    refused.append((user, str(exc)))
                    conflicts.append(user)
                    outcome = "conflict"
            except RateLimited as exc:
                refused.append((user, str(exc)))
                limited.append(user)
                outcome = "rate_limited"
            except CalbridgeError as exc:
                refused.append((user, str(exc)))
                errors.append(user)
                outcome = "error"
            else:
                (moved if result.changed else already).append(user)
                if result.forced:
                    forced[user] = result.forced
                outcome = "moved" if result.changed else "already"
            if report is not None:
                report(
                    {
                        "user": user,
                        "outcome": outcome,
                        "reason": refused[-1][1] if refused and refused[-1][0] == user else "",
                        "guards": [g.as_dict() for g in guards.get(user, ())],
                        "forced": [g.as_dict() for g in forced.get(user, ())],
                        "held": user in held,
                    }
                )
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
            conflicts=tuple(conflicts),
            rate_limited=tuple(limited),
            errors=tuple(errors),
            held=tuple(held),
        )

    # -- parity --------------------------------------------------------------------------

    async def _read(self, account_id: str, calendar_ref: str, window: TimeRange) -> list[Event]:
        rt = self.runtime
        account = await rt.aaccount(account_id)
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

    def _original_starts(
        self, account_id: str, calendars: set[str], window: TimeRange
    ) -> dict[str, EventTime]:
        """Original starts sync gave the target's occurrences (see calbridge._occurrences)."""
        out: dict[str, EventTime] = {}
        for calendar_id in sorted(calendars):
            for event in self.runtime.store.events.list_events(account_id, calendar_id, window):
                if event.original_start is not None:
                    out[event.id] = event.original_start
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
        state = await offload(self.status, app_user_id)
        if state.legacy_account_id is None or state.target_account_id is None:
            raise MigrationError(
                f"{app_user_id}: needs both a legacy and a {self.target} account to compare"
            )
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        window = window or TimeRange(
            start=now - dt.timedelta(days=self.window_days[0]),
            end=now + dt.timedelta(days=self.window_days[1]),
        )
        with background_calls():  # parity yields to user-facing calls in the rate budget
            legacy = await self._read(state.legacy_account_id, calendar, window)
            target = await self._read(state.target_account_id, calendar, window)
        known = await offload(
            self._original_starts, state.target_account_id, {e.calendar_id for e in target}, window
        )
        report = compare(legacy, target, window, now=now, grace=self.grace, known=known)
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
            await offload(self._record_parity, app_user_id, since, summary)
        return report

    def _record_parity(self, app_user_id: str, since: float | None, summary: Any) -> None:
        self.runtime.update_routing(
            app_user_id, data={"parity_clean_since": since, "last_parity": summary}
        )
        self.runtime.store.audit_log.audit(
            "migration", "migration.parity", app_user_id=app_user_id, detail=summary
        )

    async def check_parity_many(
        self,
        users: Iterable[str],
        *,
        calendar: str = "primary",
        skip_checked_since: float | None = None,
        retries: int = RATE_LIMIT_RETRIES,
        max_wait: float = RATE_LIMIT_MAX_WAIT,
        concurrency: int = 4,
    ) -> AsyncIterator[ParityResult]:
        """:meth:`check_parity` for each user, yielding each user's result as it finishes.

        Up to ``concurrency`` users are compared at once (their provider reads still wait
        their turn in the shared rate budget, as background calls); ``users`` is consumed
        as the run goes, so a generator of thousands costs memory for ``concurrency``.
        One user's 429 or error never stops the run: a 429 with a Retry-After of at most
        ``max_wait`` s is waited out and the user compared again (``retries`` times), else
        the user's result is ``rate_limited`` (or ``error``) and the others go on.
        ``skip_checked_since``: users whose last comparison (the routing row's
        ``last_parity.at``, written by every comparison) is at most that many seconds old
        are ``skipped``: a rerun resumes where an interrupted or throttled run stopped.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")

        async def one(user: str) -> ParityResult:
            if skip_checked_since is not None:
                last = (await offload(self.status, user)).last_parity
                at = (last or {}).get("at")
                if isinstance(at, int | float) and at >= self.clock() - skip_checked_since:
                    return ParityResult(app_user_id=user, status="skipped", last_parity=last)
            try:
                report = await self._patient(
                    functools.partial(self.check_parity, user, calendar=calendar),
                    retries=retries,
                    max_wait=max_wait,
                )
            except RateLimited as exc:
                return ParityResult(
                    app_user_id=user,
                    status="rate_limited",
                    error=str(exc),
                    retry_after=exc.retry_after,
                )
            except CalbridgeError as exc:
                return ParityResult(app_user_id=user, status="error", error=str(exc))
            return ParityResult(
                app_user_id=user, status="clean" if report.clean else "differs", report=report
            )

        running: dict[asyncio.Task[ParityResult], int] = {}
        try:
            for index, user in enumerate(users):
                running[asyncio.create_task(one(user))] = index
                if len(running) < concurrency:
                    continue
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=running.__getitem__):
                    del running[task]
                    yield task.result()
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=running.__getitem__):
                    del running[task]
                    yield task.result()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
