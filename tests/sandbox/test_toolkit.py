"""The sandbox toolkit on its own: GrantServer, PkcePolicy, PageTokens, Throttle, faults."""

from __future__ import annotations

import pytest

from calbridge.sandbox import (
    Consent,
    Faults,
    GrantRefused,
    GrantServer,
    PageTokens,
    PkceChallenge,
    PkcePolicy,
    RequestCounts,
    Throttle,
    mount_path,
    pkce_s256,
    retry_after_headers,
)


class FakeClock:
    """Seconds that move only when told."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


CONSENT = Consent(client_id="app", subject="ann@example.com", scope="calendar")


def test_pkce_s256_is_rfc7636s_example() -> None:
    """RFC 7636 appendix B: the verifier and challenge of the specification's example."""
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert PkceChallenge(pkce_s256(verifier), "S256").verify(verifier)
    assert not PkceChallenge(pkce_s256(verifier), "S256").verify(pkce_s256(verifier))
    assert PkceChallenge(verifier, "plain").verify(verifier)
    assert not PkceChallenge(verifier, "plain").verify(None)


def test_pkce_policy_reads_a_challenge_by_the_providers_rules() -> None:
    """No method is plain; an unsupported method is refused; no challenge is no PKCE."""
    policy = PkcePolicy()
    assert policy.challenge("abc", None) == PkceChallenge("abc", "plain")
    assert policy.challenge("abc", "S256") == PkceChallenge("abc", "S256")
    assert policy.challenge(None, "S256") is None
    with pytest.raises(GrantRefused) as refused:
        policy.challenge("abc", "S512")
    assert refused.value.reason == "invalid_request"
    strict = PkcePolicy(methods=frozenset({"S256"}), default_method="S256")
    assert strict.challenge("abc", None) == PkceChallenge("abc", "S256")
    with pytest.raises(GrantRefused):
        strict.challenge("abc", "plain")


def test_code_grant_checks_client_lifetime_redirect_and_verifier_in_order() -> None:
    """Each refusal names its reason, and a code is used up by any attempt."""
    clock = FakeClock()
    server = GrantServer(clock, code_lifetime=60)
    challenge = PkceChallenge(pkce_s256("verifier"), "S256")

    def refusal(client: str, redirect: str | None, verifier: str | None) -> str:
        code = server.issue_code(CONSENT, "https://app/cb", challenge)
        with pytest.raises(GrantRefused) as refused:
            server.exchange_code(client, code, redirect, verifier)
        with pytest.raises(GrantRefused):  # used up
            server.exchange_code("app", code, "https://app/cb", "verifier")
        return refused.value.reason

    assert refusal("other-app", "https://app/cb", "verifier") == "invalid_code"
    assert refusal("app", "https://elsewhere/cb", "verifier") == "redirect_mismatch"
    assert refusal("app", None, "verifier") == "redirect_mismatch"
    assert refusal("app", "https://app/cb", "wrong") == "invalid_verifier"
    assert refusal("app", "https://app/cb", None) == "invalid_verifier"
    code = server.issue_code(CONSENT, "https://app/cb", challenge)
    clock.now += 61
    with pytest.raises(GrantRefused) as expired:
        server.exchange_code("app", code, "https://app/cb", "verifier")
    assert expired.value.reason == "invalid_code"
    code = server.issue_code(CONSENT, "https://app/cb", challenge)
    grant = server.exchange_code("app", code, "https://app/cb", "verifier")
    assert (grant.client_id, grant.subject, grant.scope) == ("app", "ann@example.com", "calendar")
    assert grant.refresh_token is not None


def test_an_optional_redirect_uri_is_compared_only_when_sent() -> None:
    """Cronofy's rule: a code grant without ``redirect_uri`` is fine; a wrong one is not."""
    server = GrantServer(FakeClock(), redirect_uri_required=False)
    code = server.issue_code(CONSENT, "https://app/cb")
    assert server.exchange_code("app", code, None, None).subject == "ann@example.com"
    code = server.issue_code(CONSENT, "https://app/cb")
    with pytest.raises(GrantRefused):
        server.exchange_code("app", code, "https://elsewhere/cb", None)


def test_access_tokens_expire_introspect_and_revoke() -> None:
    """Introspection tells expired from unknown; revoking by either token ends the grant."""
    clock = FakeClock()
    server = GrantServer(clock)
    grant = server.grant(CONSENT)
    access = server.mint_access(grant, ttl=100)
    assert server.authenticate(access) is grant
    info = server.introspect(access)
    assert info is not None
    assert (info.active, info.expires) == (True, 1_100.0)
    clock.now += 100
    expired = server.introspect(access)
    assert expired is not None
    assert not expired.active
    assert server.authenticate(access) is None
    fresh = server.mint_access(server.refresh("app", str(grant.refresh_token)), ttl=100)
    server.expire_access("ann@example.com")  # the expire_tokens fault
    assert server.authenticate(fresh) is None
    assert server.refresh("app", str(grant.refresh_token)) is grant
    assert server.revoke(fresh, client_id="other-app") is None  # not that client's
    assert server.revoke(fresh) is grant
    assert server.revoke(fresh) is None  # already revoked
    assert server.introspect(fresh) is None
    with pytest.raises(GrantRefused) as refused:
        server.refresh("app", str(grant.refresh_token))
    assert refused.value.reason == "invalid_refresh_token"


def test_refresh_tokens_rotate_when_the_provider_rotates_them() -> None:
    """Microsoft's rule: each refresh answers a new refresh token; the old one is dead."""
    server = GrantServer(FakeClock(), rotate_refresh_tokens=True)
    grant = server.grant(CONSENT)
    first = grant.refresh_token
    assert first is not None
    assert server.refresh("app", first) is grant
    assert grant.refresh_token not in (None, first)
    with pytest.raises(GrantRefused):
        server.refresh("app", first)
    with pytest.raises(GrantRefused):  # another client's refresh token
        server.refresh("other-app", str(grant.refresh_token))


def test_offline_consent_only_gets_a_refresh_token() -> None:
    """Google ``access_type=offline``, Microsoft ``offline_access``: else no refresh token."""
    server = GrantServer(FakeClock())
    online = server.grant(Consent(client_id="app", subject="a", scope="s", offline=False))
    assert online.refresh_token is None


def test_revoke_subject_revokes_every_live_grant_of_one_client() -> None:
    """By subject, optionally for one client; the revoked grants come back."""
    server = GrantServer(FakeClock())
    mine = server.grant(CONSENT)
    theirs = server.grant(Consent(client_id="b", subject="ann@example.com", scope="s"))
    assert server.revoke_subject("ann@example.com", client_id="app") == [mine]
    assert not theirs.revoked
    assert server.revoke_subject("ann@example.com") == [theirs]
    assert server.grants("ann@example.com") == [mine, theirs]


def test_page_tokens_expire_and_the_oldest_go_first() -> None:
    """A ttl, an explicit expiry, a capacity; unknown tokens read as None."""
    clock = FakeClock()
    tokens: PageTokens[int] = PageTokens(clock, ttl=10, capacity=3)
    first = tokens.issue(1)
    assert tokens.get(first) == 1
    assert tokens.get("nonsense") is None
    late = tokens.issue(2, expires=clock.now + 100)
    clock.now += 11
    assert tokens.get(first) is None
    assert tokens.get(late) == 2
    a, b, c = tokens.issue(3), tokens.issue(4), tokens.issue(5)
    assert len(tokens) == 3
    assert tokens.get(late) is None  # evicted beyond capacity
    assert [tokens.get(t) for t in (a, b, c)] == [3, 4, 5]
    tokens.discard(a)
    assert tokens.get(a) is None
    tokens.clear()
    assert tokens.get(c) is None


def test_throttle_windows_refuse_with_the_time_to_wait() -> None:
    """A sliding window: the request past it is refused until its oldest leaves."""
    clock = FakeClock(0.0)
    counts = RequestCounts()
    throttle = Throttle(counts, clock=clock)
    for _ in range(2):
        with throttle.admit("app", rates=((2, 1.0),)) as refused:
            assert refused is None
    clock.now = 0.25
    with throttle.admit("app", rates=((2, 1.0),)) as refused:
        assert refused is not None
        assert refused.limit == (2, 1.0)
        assert refused.retry_after == pytest.approx(0.75)
    with throttle.admit("someone-else", rates=((2, 1.0),)) as refused:
        assert refused is None
    clock.now = 1.01
    with throttle.admit("app", rates=((2, 1.0),)) as refused:
        assert refused is None
    assert (counts.limited, counts.throttled) == (5, 1)


def test_throttle_concurrency_holds_a_slot_for_the_block() -> None:
    """Graph's mailbox concurrency: the fifth request at once is refused."""
    throttle = Throttle()
    with throttle.admit("mbx", concurrency=1) as first:
        assert first is None
        assert throttle.in_progress("mbx") == 1
        with throttle.admit("mbx", concurrency=1) as second:
            assert second is not None
            assert (second.limit, second.retry_after) == (None, None)
    assert throttle.in_progress("mbx") == 0


def test_a_disabled_throttle_counts_but_never_refuses() -> None:
    """``World(rate_limits=False)``: no 429 of the sandbox's own."""
    counts = RequestCounts()
    throttle = Throttle(counts, enabled=lambda: False)
    for _ in range(3):
        with throttle.admit("app", rates=((1, 60.0),), concurrency=0) as refused:
            assert refused is None
    assert (counts.limited, counts.throttled) == (3, 0)


def test_retry_after_headers_are_fractional_seconds() -> None:
    """As Graph sends them: ``0.35``, ``2``; nothing when unknown."""
    assert retry_after_headers(0.35) == {"Retry-After": "0.35"}
    assert retry_after_headers(2.0) == {"Retry-After": "2"}
    assert retry_after_headers(None) == {}


def test_mount_path_is_relative_to_the_mount() -> None:
    """Fault prefixes and counting see ``/v1/events``, not ``/cronofy/v1/events``."""
    assert mount_path({"root_path": "/cronofy", "path": "/cronofy/v1/events"}) == "/v1/events"
    assert mount_path({"root_path": "", "path": "/v1/events"}) == "/v1/events"
    assert mount_path({"root_path": "/cronofy", "path": "/v1/events"}) == "/v1/events"


async def test_intercept_takes_the_next_matching_injected_error() -> None:
    """One call per request: latency, then the armed error under its path prefix."""
    faults = Faults()
    faults.fail_next("graph", 503, times=2, path_prefix="/v1.0/me/events", retry_after=2)
    assert await faults.intercept("graph", "/v1.0/me/calendars") is None
    first = await faults.intercept("graph", "/v1.0/me/events/x")
    assert first is not None
    assert (first.status, first.retry_after) == (503, 2)
    assert await faults.intercept("graph", "/v1.0/me/events") is not None
    assert await faults.intercept("graph", "/v1.0/me/events") is None
