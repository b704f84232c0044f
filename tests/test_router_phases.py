"""The migration phase routes users under migration, whatever the policy rules say; the
rules route everyone else; docs/migration.md lists every rule in the code's order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from calbridge._config import RoutingConfig
from calbridge.router import (
    AccountFacts,
    PercentCohort,
    Phase,
    PreferWhenAuthorized,
    Router,
    TenantRule,
    UserFacts,
)

GOOGLE = AccountFacts(account_id="g1", provider="google", created_at=1)
CRONOFY = AccountFacts(account_id="c1", provider="cronofy", created_at=2)
DOC = Path(__file__).resolve().parents[1] / "docs" / "migration.md"


def decide(facts: UserFacts, *rules: object) -> tuple[str, str, str]:
    d = Router(load_facts=lambda _u: facts, rules=list(rules)).decide(facts)  # type: ignore[arg-type]
    return d.provider, d.source, d.explain()


@pytest.mark.parametrize(
    ("phase", "expected"),
    [(Phase.LEGACY, "google"), (Phase.SHADOW, "google"), (Phase.DUAL, "google")],
)
def test_phase_overrules_prefer_when_authorized(phase: Phase, expected: str) -> None:
    """A user held in legacy/shadow/dual with an active Cronofy authorization stays on
    legacy; the explanation names the rule the phase overruled."""
    facts = UserFacts(app_user_id="ann", accounts=(GOOGLE, CRONOFY), phase=phase)
    provider, source, text = decide(facts, PreferWhenAuthorized())
    assert (provider, source) == (expected, "migration")
    assert facts.under_migration
    assert "rule prefer-when-authorized would pick cronofy" in text


def test_every_policy_rule_is_overruled_not_just_the_seed_rule() -> None:
    facts = UserFacts(app_user_id="ann", accounts=(GOOGLE, CRONOFY), phase=Phase.LEGACY, tenant="a")
    provider, _, text = decide(facts, TenantRule({"a": "cronofy"}), PercentCohort(100))
    assert provider == "google"
    assert "rule tenant would pick cronofy" in text


def test_no_overrule_note_when_the_rule_agrees() -> None:
    facts = UserFacts(app_user_id="ann", accounts=(GOOGLE, CRONOFY), phase=Phase.CUTOVER)
    provider, _, text = decide(facts, PreferWhenAuthorized())
    assert provider == "cronofy"
    assert "would pick" not in text


def test_users_not_under_migration_follow_the_rules() -> None:
    """No phase (no routing row, or a row written for a pin/tenant/last provider)."""
    facts = UserFacts(app_user_id="bob", accounts=(GOOGLE, CRONOFY), last_provider="google")
    assert not facts.under_migration
    provider, source, text = decide(facts, PreferWhenAuthorized())
    assert (provider, source) == ("cronofy", "policy:prefer-when-authorized")
    assert "not in a migration" in text


def test_docs_list_every_routing_rule_in_the_codes_order() -> None:
    """docs/routing.md: pin, phase, the policy rules in RoutingConfig's order (all of them
    switched on), default, legacy fallback; docs/migration.md's section points there."""
    assert "(routing.md)" in DOC.read_text(encoding="utf-8").split("## Routing rules", 1)[1]
    section = (DOC.parent / "routing.md").read_text(encoding="utf-8")
    steps = re.findall(r"^\d\. \*\*([^*]+)\*\*", section, flags=re.MULTILINE)
    assert [s.rstrip(".,") for s in steps] == [
        "Pin",
        "Migration phase",
        "Policy rules",
        "Default",
        "Legacy fallback",
    ]
    everything = RoutingConfig(
        prefer_when_authorized=True, tenants={"a": "b"}, email_domains={"c": "d"}, percent=1
    )
    names = [rule.name for rule in everything.rules()]
    listed = re.findall(r"^\| `([a-z-]+)` \|", section, flags=re.MULTILINE)
    assert listed == names
    assert [r.name for r in RoutingConfig().rules()] == ["prefer-when-authorized"]
    on = re.findall(r"^\| `([a-z-]+)` \|[^\n]*\(\*\*on\*\*\)", section, flags=re.MULTILINE)
    assert on == ["prefer-when-authorized"]  # the only rule on by default
