"""calbridge.toolkit.AuthorizedClient against scripted answers (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

import calbridge
from calbridge import Account, RetryPolicy, Session, StaticTokenSource, TokenSet
from calbridge.errors import (
    CalbridgeError,
    NotFound,
    ProviderError,
    ProviderResponseError,
    Unavailable,
)
from calbridge.toolkit import AuthorizedClient, describe, encode_params

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Answers in turn, recording every request."""

    def __init__(self, *answers: httpx.Response | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request) if callable(answer) else answer


def error_for(response: httpx.Response, *, what: str) -> CalbridgeError:
    if response.status_code == 404:
        return NotFound(f"{what}: gone", provider="example", status=404)
    return ProviderError(f"{what}: failed", provider="example", status=response.status_code)


async def _no_sleep(_seconds: float) -> None:
    return None


def client(rec: Recorder, **kw: object) -> AuthorizedClient:
    return AuthorizedClient(
        http=httpx.AsyncClient(transport=httpx.MockTransport(rec)),
        provider="example",
        errors=error_for,
        policy=RetryPolicy(attempts=3, initial_backoff=0.0),
        sleep=_no_sleep,
        **kw,  # type: ignore[arg-type]
    )


def session(refreshes: list[TokenSet] | None = None, *, account: str = "acc") -> Session:
    async def refresh(stale: TokenSet) -> TokenSet:
        if refreshes is not None:
            refreshes.append(stale)
        return TokenSet(access_token="fresh", refresh_token="rt")

    return Session(
        account=Account(app_user_id="u", provider="example", provider_account_id=account),
        tokens=StaticTokenSource(TokenSet(access_token="stale", refresh_token="rt"), refresh),
    )


def _auth(rec: Recorder) -> list[str]:
    return [r.headers["authorization"] for r in rec.requests]


async def test_a_401_refreshes_once_and_sends_again() -> None:
    """The bearer token is the session's; a 401 refreshes once and the call goes again."""
    rec = Recorder(httpx.Response(401), httpx.Response(200, json={"ok": True}))
    refreshes: list[TokenSet] = []
    data = await client(rec).call_json(session(refreshes), "GET", "https://api.test/x")
    assert data == {"ok": True}
    assert _auth(rec) == ["Bearer stale", "Bearer fresh"]
    assert [t.access_token.reveal() for t in refreshes] == ["stale"]


async def test_a_second_401_is_the_answer_and_is_mapped() -> None:
    """Exactly one refresh: ``request`` returns the second 401, ``call`` raises it mapped."""
    rec = Recorder(httpx.Response(401))
    refreshes: list[TokenSet] = []
    response = await client(rec).request(session(refreshes), "GET", "https://api.test/x")
    assert response.status_code == 401
    assert len(rec.requests) == 2
    assert len(refreshes) == 1
    with pytest.raises(ProviderError) as info:
        await client(rec).call(session(), "GET", "https://api.test/x?code=secret")
    assert info.value.status == 401
    assert "secret" not in str(info.value)
    assert "GET https://api.test/x" in str(info.value)


async def test_accept_and_a_per_call_mapper() -> None:
    """Statuses in ``accept`` come back; ``errors=`` maps one call its own way."""
    rec = Recorder(httpx.Response(404))
    api = client(rec)
    assert (await api.call(session(), "DELETE", "https://api.test/e", accept={404})).is_error
    with pytest.raises(NotFound, match=r"events\.get: gone"):
        await api.call(session(), "GET", "https://api.test/e", what="events.get")

    def other(response: httpx.Response, *, what: str) -> CalbridgeError:
        return ProviderResponseError(f"{what} (other)", provider="example")

    with pytest.raises(ProviderResponseError, match="other"):
        await api.call(session(), "GET", "https://api.test/e", errors=other)


async def test_call_json_reads_json_or_nothing() -> None:
    """204 or an empty body is None; a body that is not JSON is ProviderResponseError."""
    for empty in (httpx.Response(204), httpx.Response(200)):
        assert await client(Recorder(empty)).call_json(session(), "GET", "https://a/x") is None
    with pytest.raises(ProviderResponseError, match="list: the answer is not JSON"):
        await client(Recorder(httpx.Response(200, text="<html>"))).call_json(
            session(), "GET", "https://a/x", what="list"
        )


async def test_params_headers_and_body() -> None:
    """Params are encoded, the client's headers sent under the call's, the body is JSON."""
    rec = Recorder(httpx.Response(200, json={}))
    api = client(rec, headers={"Prefer": "a", "X-Client": "c"})
    await api.call(
        session(),
        "POST",
        "https://api.test/x",
        params={"n": 3, "flag": True, "skip": None, "ids": ["a", "b"]},
        headers={"Prefer": "b"},
        json={"k": "v"},
    )
    (request,) = rec.requests
    assert request.url.query == b"n=3&flag=true&ids=a&ids=b"
    assert request.headers["prefer"] == "b"
    assert request.headers["x-client"] == "c"
    assert json.loads(request.content) == {"k": "v"}


async def test_params_none_follows_a_link_verbatim() -> None:
    """Without params the URL's own query is sent untouched."""
    rec = Recorder(httpx.Response(200, json={}))
    await client(rec).call(session(), "GET", "https://api.test/x?%24skiptoken=a%2Bb")
    assert rec.requests[0].url.query == b"%24skiptoken=a%2Bb"


def test_encode_params() -> None:
    assert encode_params(None) is None
    assert encode_params({"a": None}) is None
    assert encode_params([("a", "1"), ("a", "2"), ("b", False)]) == [
        ("a", "1"),
        ("a", "2"),
        ("b", "false"),
    ]
    assert encode_params({"t": (1, 2), "s": "x"}) == [("t", "1"), ("t", "2"), ("s", "x")]


def test_describe_leaves_the_query_out() -> None:
    request = httpx.Request("GET", "https://api.test/x?token=t#f")
    assert describe(request) == "GET https://api.test/x"


async def test_limiters_pace_every_send() -> None:
    """Every limiter is taken before each request, the unauthorised ones too."""
    taken: list[str] = []

    class Limiter:
        def __init__(self, name: str) -> None:
            self.name = name

        async def acquire(self) -> None:
            taken.append(self.name)

    rec = Recorder(httpx.Response(401), httpx.Response(200))
    api = client(rec, limiters=[Limiter("second"), Limiter("minute")])
    await api.call(session(), "GET", "https://api.test/x")
    await api.send(httpx.Request("POST", "https://api.test/token"))
    assert taken == ["second", "minute"] * 3


async def test_retry_also_repeats_what_send_does_not() -> None:
    """A rule's answers are sent again with backoff, up to the policy's attempts."""
    seen: list[bool] = []

    def rule(response: httpx.Response, *, idempotent: bool) -> bool:
        seen.append(idempotent)
        return response.status_code == 403

    rec = Recorder(httpx.Response(403), httpx.Response(403), httpx.Response(200))
    api = client(rec, retry_also=rule)
    assert (await api.call(session(), "GET", "https://api.test/x")).status_code == 200
    assert len(rec.requests) == 3
    stuck = Recorder(httpx.Response(403))
    response = await client(stuck, retry_also=rule).request(session(), "POST", "https://a/x")
    assert response.status_code == 403
    assert len(stuck.requests) == 3  # policy.attempts
    assert seen[-1] is False  # a POST may not be repeated unless it says so


async def test_account_concurrency_caps_calls_per_account() -> None:
    """At most ``account_concurrency`` calls of one account are in flight at once."""
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        key = request.url.path
        running[key] = running.get(key, 0) + 1
        peak[key] = max(peak.get(key, 0), running[key])
        await gate.wait()
        running[key] -= 1
        return httpx.Response(200)

    api = AuthorizedClient(
        http=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        provider="example",
        errors=error_for,
        account_concurrency=2,
    )
    calls = [
        asyncio.create_task(api.call(session(account=name), "GET", f"https://api.test/{name}"))
        for name in ("a", "b")
        for _ in range(5)
    ]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(*calls)
    assert peak == {"/a": 2, "/b": 2}


async def test_calls_go_through_the_providers_breaker() -> None:
    """The client sends through calbridge.send under its provider: its breaker opens."""
    rec = Recorder(httpx.Response(500))
    http = calbridge.make_http_client(
        transport=httpx.MockTransport(rec), breaker=calbridge.BreakerPolicy(threshold=2)
    )
    api = AuthorizedClient(
        http=http, provider="example", errors=error_for, policy=RetryPolicy(attempts=1)
    )
    for _ in range(2):
        with pytest.raises(ProviderError):
            await api.call(session(), "GET", "https://api.test/x")
    with pytest.raises(Unavailable):
        await api.call(session(), "GET", "https://api.test/x")
    assert len(rec.requests) == 2  # the open circuit sent nothing
    await http.aclose()
