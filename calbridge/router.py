"""Per-user routing: which provider serves this user's call, and why.

The router decides on every call, in this order:

1. an explicit per-user **pin** (``calbridge route USER --pin PROVIDER``, :meth:`CalBridge.pin`);
2. the user's **migration phase**, for a user *under migration* (see
   :attr:`UserFacts.under_migration`: the user's routing row carries a phase):
   ``legacy``/``shadow``/``dual`` → the legacy provider, ``cutover``/``retired`` → the
   target provider. The phase wins over every policy rule: a user held in ``legacy`` who
   authorises the target stays on legacy until the migration moves them;
3. **policy rules**, only for users not under migration, first answer naming a provider
   the user holds an account at wins: :class:`PreferWhenAuthorized` (the seed case: use
   Cronofy as soon as the user has an active Cronofy authorization), :class:`TenantRule`,
   :class:`EmailDomainRule`, :class:`PercentCohort` (deterministic, sticky per user);
4. the user's oldest active account (or, with none active, the oldest account).

Then, while both credentials exist, a **fallback** to the legacy provider when the chosen
provider is the target and its account needs re-authorization or the target was reported
unavailable (:meth:`Router.mark_unavailable`).

Decisions are cached per user for ``ttl`` seconds (a dict lookup when warm) and built from
one store read (:class:`UserFacts`) when cold. Every decision can be explained. Async code
calls :meth:`Router.aroute` / :meth:`Router.aexplain`, which make that read off the event
loop; :meth:`Router.route` is for synchronous callers.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import attrs

from .errors import CalbridgeError

__all__ = [
    "AccountFacts",
    "Decision",
    "EmailDomainRule",
    "NoRouteError",
    "PercentCohort",
    "Phase",
    "PreferWhenAuthorized",
    "Router",
    "Rule",
    "TenantRule",
    "UserFacts",
    "cohort_bucket",
]


class Phase(enum.StrEnum):
    """Migration phases of one user (see :mod:`calbridge.migration`)."""

    LEGACY = "legacy"  #: legacy serves everything
    SHADOW = "shadow"  #: legacy serves; reads replayed against the target and compared
    DUAL = "dual"  #: legacy primary; writes verified visible through the target
    CUTOVER = "cutover"  #: target primary; legacy kept warm for rollback
    RETIRED = "retired"  #: target only; legacy channels stopped, tokens revoked

    @property
    def target_primary(self) -> bool:
        """True when the target provider serves this phase."""
        return self in (Phase.CUTOVER, Phase.RETIRED)


class NoRouteError(CalbridgeError, LookupError):
    """The user has no account that can serve the call."""


@attrs.frozen(kw_only=True)
class AccountFacts:
    """What the router needs to know of one account."""

    account_id: str
    provider: str
    status: str = "active"
    email: str | None = None
    created_at: int = 0

    @property
    def active(self) -> bool:
        """True when the account's authorization works."""
        return self.status == "active"


@attrs.frozen(kw_only=True)
class UserFacts:
    """Everything a routing decision reads, loaded in one store read."""

    app_user_id: str
    accounts: tuple[AccountFacts, ...] = ()
    phase: Phase | None = None
    pin: str | None = None
    tenant: str | None = None
    legacy_provider: str | None = None
    last_provider: str | None = None

    @property
    def under_migration(self) -> bool:
        """True when the user's routing row carries a migration phase (``legacy`` included).

        A user gets one from the first ``calbridge migrate`` step that touches them
        (``enroll``, a ``start`` -- refused or not --, ``rollback``) and keeps it; a user
        with no routing row, or a row without a phase (written for a pin, a tenant or the
        last provider), is not under migration and is routed by the policy rules.
        """
        return self.phase is not None

    def account(self, provider: str) -> AccountFacts | None:
        """The user's account at ``provider`` (an active one first)."""
        found = [a for a in self.accounts if a.provider == provider]
        found.sort(key=lambda a: (not a.active, a.created_at))
        return found[0] if found else None

    @property
    def email(self) -> str | None:
        """Any known email address of the user."""
        return next((a.email for a in self.accounts if a.email), None)


class Rule(Protocol):
    """A policy rule: name a provider for the user, or None to pass."""

    @property
    def name(self) -> str:
        """Shown in explanations."""
        ...

    def decide(self, facts: UserFacts, target: str) -> str | None:
        """The provider this rule picks, or None."""
        ...


def _str_map(value: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in value.items()}


@attrs.frozen
class PreferWhenAuthorized:
    """Use ``provider`` (default: the router's target) once the user has an active account."""

    provider: str | None = None
    name: str = "prefer-when-authorized"

    def decide(self, facts: UserFacts, target: str) -> str | None:
        """The provider when the user authorized it and it is active."""
        wanted = self.provider or target
        account = facts.account(wanted)
        return wanted if account is not None and account.active else None


@attrs.frozen
class TenantRule:
    """Route by tenant: ``{"acme": "cronofy"}``."""

    mapping: Mapping[str, str] = attrs.field(converter=_str_map, hash=False)
    name: str = "tenant"

    def decide(self, facts: UserFacts, target: str) -> str | None:
        """The tenant's provider."""
        return self.mapping.get((facts.tenant or "").lower())


@attrs.frozen
class EmailDomainRule:
    """Route by e-mail domain: ``{"example.com": "cronofy"}``."""

    mapping: Mapping[str, str] = attrs.field(converter=_str_map, hash=False)
    name: str = "email-domain"

    def decide(self, facts: UserFacts, target: str) -> str | None:
        """The domain's provider."""
        email = facts.email
        if not email or "@" not in email:
            return None
        return self.mapping.get(email.rsplit("@", 1)[1].lower())


def cohort_bucket(app_user_id: str, salt: str = "calbridge") -> float:
    """A stable number in [0, 100) for the user: sticky cohorts across processes."""
    digest = hashlib.sha256(f"{salt}:{app_user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


@attrs.frozen
class PercentCohort:
    """Send ``percent`` % of users (deterministically chosen) to ``provider``."""

    percent: float
    provider: str | None = None
    salt: str = "calbridge"
    name: str = "percent-cohort"

    def decide(self, facts: UserFacts, target: str) -> str | None:
        """The provider when the user's bucket is below ``percent``."""
        if cohort_bucket(facts.app_user_id, self.salt) < self.percent:
            return self.provider or target
        return None


@attrs.frozen(kw_only=True)
class Decision:
    """Where a user's call goes, and the reasoning."""

    app_user_id: str
    provider: str
    account_id: str
    #: "pin", "migration", "policy:<rule>", "default", "fallback"
    source: str
    steps: tuple[str, ...] = ()
    #: set when the chosen provider could not serve and legacy took over
    fallback_from: str | None = None

    def explain(self) -> str:
        """A human-readable explanation, one step per line."""
        lines = [f"user {self.app_user_id!r} -> {self.provider} (account {self.account_id})"]
        lines += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "app_user_id": self.app_user_id,
            "provider": self.provider,
            "account_id": self.account_id,
            "source": self.source,
            "steps": list(self.steps),
            "fallback_from": self.fallback_from,
        }


FactsLoader = Callable[[str], UserFacts]
ChangeListener = Callable[[Decision, str | None], None]


@attrs.define
class Router:
    """Routes users to providers, caching decisions for ``ttl`` seconds.

    Attributes:
        load_facts: one store read returning :class:`UserFacts` for a user.
        target: the provider users migrate to (``"cronofy"``).
        rules: policy rules, first answer wins.
        on_change: called when a user's provider changes (writes the audit log).
    """

    load_facts: FactsLoader
    target: str = "cronofy"
    rules: Sequence[Rule] = ()
    ttl: float = 5.0
    on_change: ChangeListener | None = None
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, tuple[float, Decision]] = attrs.field(init=False, factory=dict)
    _unavailable: dict[str, float] = attrs.field(init=False, factory=dict)
    _last: dict[str, str] = attrs.field(init=False, factory=dict)
    loads: int = attrs.field(init=False, default=0)

    def route(self, app_user_id: str) -> Decision:
        """The decision for this user (cached)."""
        hit = self._cache.get(app_user_id)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        return self._decide_and_cache(app_user_id)

    def explain(self, app_user_id: str, *, record: bool = True) -> Decision:
        """A fresh decision (reads the store), with its steps.

        ``record=False`` only looks: the decision is neither cached nor reported as a
        changed route (what ``calbridge route USER`` shows an operator).
        """
        if not record:
            return self.decide(self.load_facts(app_user_id))
        return self._decide_and_cache(app_user_id)

    async def aroute(self, app_user_id: str) -> Decision:
        """:meth:`route` for async code: a warm cache answers on the loop; a cold one loads
        the facts (and records a changed route) on the database thread pool
        (:func:`calbridge.store.offload`), so the event loop never waits on the store."""
        hit = self._cache.get(app_user_id)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        from .store import offload

        return await offload(self._decide_and_cache, app_user_id)

    async def aexplain(self, app_user_id: str, *, record: bool = True) -> Decision:
        """:meth:`explain` for async code (the store read runs off the event loop)."""
        from .store import offload

        return await offload(self.explain, app_user_id, record=record)

    def invalidate(self, app_user_id: str | None = None) -> None:
        """Forget cached decisions (of one user, or all)."""
        if app_user_id is None:
            self._cache.clear()
        else:
            self._cache.pop(app_user_id, None)

    def mark_unavailable(self, provider: str, seconds: float) -> None:
        """Treat ``provider`` as unavailable for a while (legacy fallback applies)."""
        self._unavailable[provider] = self.clock() + seconds
        self._cache.clear()

    def _is_unavailable(self, provider: str) -> bool:
        until = self._unavailable.get(provider)
        return until is not None and until > self.clock()

    def _decide_and_cache(self, app_user_id: str) -> Decision:
        self.loads += 1
        facts = self.load_facts(app_user_id)
        decision = self.decide(facts)
        self._cache[app_user_id] = (self.clock() + self.ttl, decision)
        previous = self._last.get(app_user_id, facts.last_provider)
        if previous != decision.provider:
            self._last[app_user_id] = decision.provider
            if self.on_change is not None:
                self.on_change(decision, previous)
        return decision

    def decide(self, facts: UserFacts) -> Decision:
        """The decision for ``facts`` (pure; no cache, no store)."""
        steps: list[str] = []
        chosen, source = self._choose(facts, steps)
        account = facts.account(chosen)
        if account is None:
            raise NoRouteError(
                f"user {facts.app_user_id!r} has no {chosen} account; connect one first"
            )
        fallback_from = None
        if not account.active or self._is_unavailable(chosen):
            why = "needs re-authorization" if not account.active else "is unavailable"
            legacy = self._legacy_of(facts, chosen)
            if legacy is not None:
                steps.append(
                    f"fallback: {chosen} {why}; legacy {legacy.provider} still holds credentials"
                )
                fallback_from, chosen, account = chosen, legacy.provider, legacy
                source = "fallback"
            else:
                steps.append(
                    f"{chosen} {why} and no other credentials exist: calls will fail "
                    "until the user reconnects"
                )
        return Decision(
            app_user_id=facts.app_user_id,
            provider=chosen,
            account_id=account.account_id,
            source=source,
            steps=tuple(steps),
            fallback_from=fallback_from,
        )

    def _legacy_of(self, facts: UserFacts, chosen: str) -> AccountFacts | None:
        if chosen != self.target:
            return None
        candidates = [a for a in facts.accounts if a.provider != self.target and a.active]
        if facts.legacy_provider:
            candidates = [a for a in candidates if a.provider == facts.legacy_provider]
        candidates.sort(key=lambda a: a.created_at)
        return candidates[0] if candidates else None

    def _legacy_provider(self, facts: UserFacts) -> str | None:
        if facts.legacy_provider:
            return facts.legacy_provider
        others = sorted(
            (a for a in facts.accounts if a.provider != self.target), key=lambda a: a.created_at
        )
        return others[0].provider if others else None

    def _policy(self, facts: UserFacts) -> tuple[str, str] | None:
        """What the policy rules would pick (provider, rule name), for explanations."""
        for rule in self.rules:
            picked = rule.decide(facts, self.target)
            if picked is not None and facts.account(picked) is not None:
                return picked, rule.name
        return None

    def _choose(self, facts: UserFacts, steps: list[str]) -> tuple[str, str]:
        if facts.pin:
            steps.append(f"pinned to {facts.pin}")
            return facts.pin, "pin"
        steps.append("no pin")
        if facts.phase is not None:
            legacy = self._legacy_provider(facts)
            if facts.phase.target_primary or legacy is None:
                chosen = self.target
                steps.append(f"migration phase {facts.phase}: {self.target} is primary")
            else:
                chosen = legacy
                steps.append(f"migration phase {facts.phase}: legacy {legacy} is primary")
            overruled = self._policy(facts)
            if overruled is not None and overruled[0] != chosen:
                steps.append(
                    f"under migration: rule {overruled[1]} would pick {overruled[0]}; "
                    "the phase wins until the migration moves the user"
                )
            return chosen, "migration"
        steps.append("not in a migration (no phase on the routing row): policy rules apply")
        for rule in self.rules:
            picked = rule.decide(facts, self.target)
            if picked is not None and facts.account(picked) is not None:
                steps.append(f"rule {rule.name} picked {picked}")
                return picked, f"policy:{rule.name}"
            steps.append(f"rule {rule.name} passed")
        active = sorted((a for a in facts.accounts if a.active), key=lambda a: a.created_at)
        pool = active or sorted(facts.accounts, key=lambda a: a.created_at)
        if not pool:
            raise NoRouteError(f"user {facts.app_user_id!r} has no connected account")
        steps.append(f"default: oldest {'active ' if active else ''}account ({pool[0].provider})")
        return pool[0].provider, "default"
