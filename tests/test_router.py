"""Router decisions: pin, migration phase, policy rules, fallback, cache, audit trigger."""

from __future__ import annotations

import pytest

from calbridge.router import (
    AccountFacts,
    Decision,
    EmailDomainRule,
    NoRouteError,
    PercentCohort,
    Phase,
    PreferWhenAuthorized,
    Router,
    TenantRule,
    UserFacts,
    cohort_bucket,
)

GOOGLE = AccountFacts(account_id="g1", provider="google", email="ann@acme.test", created_at=1)
CRONOFY = AccountFacts(account_id="c1", provider="cronofy", email="ann@acme.test", created_at=2)


def router(facts: dict[str, UserFacts], **kw: object) -> Router:
    return Router(load_facts=facts.__getitem__, **kw)  # type: ignore[arg-type]


def test_default_is_the_oldest_active_account() -> None:
    """With no pin, phase or rule, the oldest active account serves."""
    r = router({"ann": UserFacts(app_user_id="ann", accounts=(GOOGLE, CRONOFY))})
    d = r.route("ann")
    assert (d.provider, d.source) == ("google", "default")


def test_seed_rule_prefers_cronofy_once_authorized() -> None:
    """'Use Cronofy as soon as the user has an active Cronofy authorization.'"""
    facts = {
        "ann": UserFacts(app_user_id="ann", accounts=(GOOGLE, CRONOFY)),
        "bob": UserFacts(app_user_id="bob", accounts=(GOOGLE,)),
    }
    r = router(facts, rules=[PreferWhenAuthorized()])
    assert r.route("ann").provider == "cronofy"
    assert r.route("ann").source == "policy:prefer-when-authorized"
    assert r.route("bob").provider == "google"


def test_pin_beats_phase_and_rules() -> None:
    """An explicit pin wins over everything."""
    facts = {
        "ann": UserFacts(
            app_user_id="ann", accounts=(GOOGLE, CRONOFY), pin="google", phase=Phase.CUTOVER
        )
    }
    d = router(facts, rules=[PreferWhenAuthorized()]).route("ann")
    assert (d.provider, d.source) == ("google", "pin")


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (Phase.LEGACY, "google"),
        (Phase.SHADOW, "google"),
        (Phase.DUAL, "google"),
        (Phase.CUTOVER, "cronofy"),
        (Phase.RETIRED, "cronofy"),
    ],
)
def test_migration_phase_decides_before_rules(phase: Phase, expected: str) -> None:
    """legacy/shadow/dual serve from legacy; cutover/retired from the target."""
    facts = {"ann": UserFacts(app_user_id="ann", accounts=(GOOGLE, CRONOFY), phase=phase)}
    d = router(facts, rules=[PreferWhenAuthorized()]).route("ann")
    assert (d.provider, d.source) == (expected, "migration")


def test_tenant_and_domain_rules() -> None:
    """Tenant and e-mail domain rules pick providers the user holds."""
    facts = {
        "t": UserFacts(app_user_id="t", accounts=(GOOGLE, CRONOFY), tenant="acme"),
        "d": UserFacts(app_user_id="d", accounts=(GOOGLE, CRONOFY)),
        "x": UserFacts(app_user_id="x", accounts=(GOOGLE,), tenant="acme"),
    }
    r = router(
        facts, rules=[TenantRule({"acme": "cronofy"}), EmailDomainRule({"acme.test": "cronofy"})]
    )
    assert r.route("t").source == "policy:tenant"
    assert r.route("d").source == "policy:email-domain"
    # a rule naming a provider the user has no account at passes
    assert r.route("x").provider == "google"


def test_percent_cohorts_are_deterministic_and_proportional() -> None:
    """The same user always lands in the same bucket; ~percent of users are picked."""
    assert cohort_bucket("user-1") == cohort_bucket("user-1")
    users = {
        f"u{i}": UserFacts(app_user_id=f"u{i}", accounts=(GOOGLE, CRONOFY)) for i in range(2000)
    }
    r = router(users, rules=[PercentCohort(25)])
    picked = sum(r.route(u).provider == "cronofy" for u in users)
    assert 400 < picked < 600
    r2 = router(users, rules=[PercentCohort(25)])
    assert all(r.route(u) == r2.route(u) for u in users)
    # growing the cohort keeps everyone already in it (sticky)
    r3 = router(users, rules=[PercentCohort(50)])
    assert all(r3.route(u).provider == "cronofy" for u in users if r.route(u).provider == "cronofy")


def test_fallback_to_legacy_when_target_needs_reauth() -> None:
    """While both credentials exist, reauth on the target falls back to legacy."""
    broken = AccountFacts(account_id="c1", provider="cronofy", status="needs_reauth", created_at=2)
    facts = {"ann": UserFacts(app_user_id="ann", accounts=(GOOGLE, broken), phase=Phase.CUTOVER)}
    d = router(facts).route("ann")
    assert (d.provider, d.fallback_from, d.source) == ("google", "cronofy", "fallback")
    assert "needs re-authorization" in d.explain()


def test_fallback_when_target_reported_unavailable() -> None:
    """mark_unavailable sends target users to legacy until the cool-down ends."""
    now = [0.0]
    facts = {"ann": UserFacts(app_user_id="ann", accounts=(GOOGLE, CRONOFY), phase=Phase.CUTOVER)}
    r = router(facts, clock=lambda: now[0])
    assert r.route("ann").provider == "cronofy"
    r.mark_unavailable("cronofy", 30)
    assert r.route("ann").provider == "google"
    now[0] = 31
    assert r.route("ann").provider == "cronofy"


def test_no_fallback_without_legacy_credentials() -> None:
    """Without legacy credentials the decision stays and says the user must reconnect."""
    broken = AccountFacts(account_id="c1", provider="cronofy", status="needs_reauth")
    d = router(
        {"ann": UserFacts(app_user_id="ann", accounts=(broken,), phase=Phase.RETIRED)}
    ).route("ann")
    assert d.provider == "cronofy"
    assert "reconnects" in d.explain()


def test_no_account_is_a_typed_error() -> None:
    """A user with no account gets NoRouteError."""
    with pytest.raises(NoRouteError):
        router({"z": UserFacts(app_user_id="z")}).route("z")


def test_cache_reads_store_once_per_ttl_and_reports_changes() -> None:
    """Warm decisions do not read the store; a provider change is reported once."""
    now = [0.0]
    state = {
        "ann": UserFacts(app_user_id="ann", accounts=(GOOGLE, CRONOFY), last_provider="google")
    }
    changes: list[tuple[Decision, str | None]] = []
    r = router(
        state, ttl=5, clock=lambda: now[0], on_change=lambda d, prev: changes.append((d, prev))
    )
    for _ in range(100):
        r.route("ann")
    assert r.loads == 1
    assert changes == []
    state["ann"] = UserFacts(
        app_user_id="ann", accounts=(GOOGLE, CRONOFY), phase=Phase.CUTOVER, last_provider="google"
    )
    assert r.route("ann").provider == "google"  # still cached
    now[0] = 6
    assert r.route("ann").provider == "cronofy"
    assert r.loads == 2
    assert [(d.provider, prev) for d, prev in changes] == [("cronofy", "google")]
    r.invalidate("ann")
    r.route("ann")
    assert len(changes) == 1


def test_explain_lists_every_step() -> None:
    """explain() walks pin, phase, each rule and the default."""
    facts = {"ann": UserFacts(app_user_id="ann", accounts=(GOOGLE,))}
    d = router(facts, rules=[TenantRule({}), PercentCohort(0)]).explain("ann")
    text = d.explain()
    for fragment in (
        "no pin",
        "not in a migration",
        "rule tenant passed",
        "rule percent-cohort passed",
        "default",
    ):
        assert fragment in text
    assert d.as_dict()["provider"] == "google"
