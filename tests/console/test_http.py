"""The console over HTTP (in process, on a store populated through the real sandboxes):
login, CSRF, headers, secrets never shown, the actions' guards and audit entries,
and the cohort action."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from calbridge import Secret
from calbridge._config import BridgeConfig
from calbridge.bridge import CalBridge
from calbridge.console import CONSOLE_CSP, ConsoleSettings, hash_password, make_console_app
from calbridge.migration import Migrator
from calbridge.router import Phase

from .conftest import PASSWORD

SESSION_KEY = "http-test-session-key-" + "y" * 32


@pytest.fixture
async def bridge(env: dict[str, str], population: dict[str, str]) -> AsyncIterator[CalBridge]:
    async with CalBridge(BridgeConfig.from_file(env["CALBRIDGE_CONFIG"])) as opened:
        yield opened


def _settings(**overrides: Any) -> ConsoleSettings:
    values: dict[str, Any] = {
        "password": Secret(hash_password(PASSWORD, iterations=1000)),
        "session_key": Secret(SESSION_KEY),
    }
    values.update(overrides)
    return ConsoleSettings(**values)


@pytest.fixture
def app(bridge: CalBridge) -> Any:
    return make_console_app(bridge, _settings())


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://console.test"
    )


@pytest.fixture
async def http(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as client:
        yield client


def _csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None, page.text
    return match.group(1)


async def _login(http: httpx.AsyncClient, name: str = "alice") -> str:
    """Log in; the CSRF token of the logged-in session."""
    page = await http.get("/login")
    done = await http.post(
        "/login", data={"csrf": _csrf(page), "operator": name, "password": PASSWORD}
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/"
    return _csrf(await http.get("/"))


async def _act(
    http: httpx.AsyncClient, csrf: str, user: str, **form: str
) -> tuple[httpx.Response, httpx.Response]:
    """An action's confirmation page, then the confirmed POST's answer."""
    confirm = await http.post(f"/actions/{user}", data={"csrf": csrf, **form})
    assert confirm.status_code == 200
    assert 'name="confirm" value="yes"' in confirm.text
    done = await http.post(f"/actions/{user}", data={"csrf": csrf, **form, "confirm": "yes"})
    assert done.status_code == 303
    return confirm, done


def _audit(bridge: CalBridge, user: str | None, action: str) -> list[Any]:
    return [e for e in bridge.store.audit_log.audit_entries(app_user_id=user) if e.action == action]


async def test_wrong_password_and_bad_names_are_refused(http: httpx.AsyncClient) -> None:
    """A wrong password is 401 with no session; so is a name the audit log cannot carry."""
    page = await http.get("/login")
    csrf = _csrf(page)
    wrong = await http.post(
        "/login", data={"csrf": csrf, "operator": "alice", "password": PASSWORD + "x"}
    )
    assert wrong.status_code == 401
    assert "wrong password" in wrong.text
    bad_name = await http.post(
        "/login", data={"csrf": csrf, "operator": "<script>", "password": PASSWORD}
    )
    assert bad_name.status_code == 401
    assert "<script>" not in bad_name.text
    assert (await http.get("/")).headers["location"] == "/login"  # still logged out


async def test_every_post_needs_the_sessions_csrf_token(
    http: httpx.AsyncClient, bridge: CalBridge, app: Any
) -> None:
    """Without the token, with another session's, or from another origin: 403 and
    nothing written (the phase and the audit log are unchanged)."""
    csrf = await _login(http)
    before = len(bridge.store.audit_log.audit_entries(limit=1000))
    form = {"action": "rollback", "confirm": "yes"}
    async with _client(app) as other:
        stranger = _csrf(await other.get("/login"))  # a real token, of another session
    for data, headers in (
        (form, {}),
        ({**form, "csrf": stranger}, {}),
        ({**form, "csrf": csrf}, {"origin": "https://evil.example"}),
    ):
        refused = await http.post("/actions/ann", data=data, headers=headers)
        assert refused.status_code == 403, data
    login_forged = await http.post("/login", data={"operator": "x", "password": PASSWORD})
    assert login_forged.status_code == 403
    assert Migrator(bridge.runtime).status("ann").phase is Phase.SHADOW
    assert len(bridge.store.audit_log.audit_entries(limit=1000)) == before
    # the same form with the token goes through to the confirmation page
    assert (await http.post("/actions/ann", data={"csrf": csrf, "action": "rollback"})).is_success


async def test_headers_cookie_and_no_secret_on_any_page(
    http: httpx.AsyncClient, bridge: CalBridge, env: dict[str, str]
) -> None:
    """Pages, 404s and redirects carry the security headers and the console's own CSP;
    the session cookie is Secure, HttpOnly and SameSite=Strict; no token, key, password
    hash or session key appears on any page."""
    login = await http.get("/login")
    cookie = login.headers["set-cookie"].lower()
    assert all(flag in cookie for flag in ("secure", "httponly", "samesite=strict"))
    csrf = await _login(http)
    pages = [login, await http.get("/"), await http.get("/?phase=dual")]
    for user in ("ann", "bob", "dave", "erin", "nobody"):
        pages.append(await http.get(f"/users/{user}"))
    pages.append(await http.post("/actions/dave", data={"csrf": csrf, "action": "cutover"}))
    pages.append(await http.get("/no-such-page"))
    assert pages[-2].status_code == 200
    assert pages[-1].status_code == 404
    assert pages[-3].status_code == 404  # nobody
    secrets = [SESSION_KEY, env["CALBRIDGE_KEYS"].partition(":")[2], "pbkdf2_sha256"]
    for account in await bridge.accounts():
        assert account.id is not None
        record = bridge.store.credentials.get_tokens(account.id)
        assert record is not None
        secrets.append(record.tokens.access_token.reveal())
        if record.tokens.refresh_token is not None:
            secrets.append(record.tokens.refresh_token.reveal())
    assert len(secrets) >= 3 + 6
    for page in pages:
        assert page.headers["content-security-policy"] == CONSOLE_CSP
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        for secret in secrets:
            assert secret not in page.text
    assert "<script" not in "".join(p.text for p in pages)


async def test_cutover_refused_by_its_guard_then_rollback_and_pin(
    http: httpx.AsyncClient, bridge: CalBridge
) -> None:
    """The console's actions are the CLI's: a refused cutover changes no phase (audited as
    refused, naming the operator); rollback moves; pin to a provider without an account
    is refused, pin to cronofy routes there; every confirmed action is audited."""
    csrf = await _login(http, "olga")
    confirm, _ = await _act(http, csrf, "dave", action="cutover")
    assert "parity has not been clean" in confirm.text
    migrator = Migrator(bridge.runtime)
    assert migrator.status("dave").phase is Phase.DUAL
    [refused] = _audit(bridge, "dave", "console.cutover")
    assert refused.actor == "console:olga"
    assert refused.detail["outcome"] == "refused"
    assert refused.detail["guards"] == ["parity"]

    _, done = await _act(http, csrf, "dave", action="rollback")
    page = await http.get(done.headers["location"])
    assert "rollback dave: moved" in page.text
    assert migrator.status("dave").phase is Phase.LEGACY

    confirm, _ = await _act(http, csrf, "bob", action="pin", provider="cronofy")
    assert "bob has no active cronofy account to pin to" in confirm.text
    assert (await bridge.runtime.router.aexplain("bob", record=False)).provider == "google"
    [pin_refused] = _audit(bridge, "bob", "console.pin")
    assert pin_refused.detail["outcome"] == "refused"

    await _act(http, csrf, "ann", action="pin", provider="cronofy")
    assert (await bridge.runtime.router.aexplain("ann", record=False)).source == "pin"
    await _act(http, csrf, "ann", action="unpin")
    assert (await bridge.runtime.router.aexplain("ann", record=False)).source == "migration"
    outcomes = [e.detail["outcome"] for e in _audit(bridge, "ann", "console.pin")]
    assert outcomes == ["done"]
    assert [e.detail["provider"] for e in _audit(bridge, "ann", "console.unpin")] == [None]


async def test_parity_check_shows_the_report(
    http: httpx.AsyncClient, bridge: CalBridge, sandbox: Any
) -> None:
    """'check parity now' compares both views through the sandboxes and the user page
    then shows the summary the store recorded and this console's full report."""
    world, srv = sandbox
    srv.call(lambda: world.clock.advance(600))  # Cronofy learns the native calendar
    csrf = await _login(http)
    _, done = await _act(http, csrf, "ann", action="parity")
    page = await http.get(done.headers["location"])
    assert "parity ann: clean" in page.text
    assert "Field differences (checked from this console" in page.text
    assert "No differences." in page.text
    assert Migrator(bridge.runtime).status("ann").last_parity["clean"] is True  # type: ignore[index]


async def test_cohort_step_moves_a_whole_phase_with_confirmation(
    http: httpx.AsyncClient, bridge: CalBridge
) -> None:
    """The cohort form runs Migrator.bulk over every user of a phase after a dry-run
    confirmation page; the audit entry names the operator and the users moved."""
    csrf = await _login(http, "pat")
    form = {"csrf": csrf, "phase": "shadow", "action": "dual"}
    confirm = await http.post("/cohort", data=form)
    assert "would move 1, already 0, refused 0" in confirm.text
    assert Migrator(bridge.runtime).status("ann").phase is Phase.SHADOW
    done = await http.post("/cohort", data={**form, "confirm": "yes"})
    assert done.status_code == 303
    assert Migrator(bridge.runtime).status("ann").phase is Phase.DUAL
    [entry] = _audit(bridge, None, "console.cohort.dual")
    assert (entry.actor, entry.detail["moved"]) == ("console:pat", ["ann"])
    bad = await http.post("/cohort", data={**form, "action": "drop-tables"})
    assert bad.status_code == 400


async def test_no_login_console_and_required_password(bridge: CalBridge) -> None:
    """Without a password the settings refuse (the console does not start); with
    login=False the operator is `local` and no login page stands in the way."""
    from calbridge.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="CALBRIDGE_CONSOLE_PASSWORD"):
        ConsoleSettings(password=None)
    app = make_console_app(bridge, _settings(password=None, login=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://c.test") as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert '<strong id="operator">local</strong>' in page.text


async def test_retry_dead_jobs_queues_them_again_and_audits(
    http: httpx.AsyncClient, bridge: CalBridge
) -> None:
    """A job about erin that failed its last attempt is dead: the user page offers
    'retry dead jobs', the confirmation says what will be queued, and confirming queues
    it with a fresh attempt budget, audited with the operator; with none dead, refused."""
    from calbridge.jobs import HandlerRegistry, Worker

    [account] = await bridge.accounts("erin")
    queue = bridge.runtime.queue
    handlers = HandlerRegistry()

    @handlers.handler("console.test.boom")
    async def boom(job: Any) -> None:
        raise RuntimeError("upstream refused")

    job_id = queue.enqueue("console.test.boom", {"account": account.id}, max_attempts=1)
    worker = Worker(queue, handlers, schedule_interval=None)
    assert await worker.run_until_idle() == 1
    dead = queue.get(job_id)
    assert dead is not None
    assert dead.state == "dead"

    csrf = await _login(http, "olga")
    page = await http.get("/users/erin")
    assert 'id="action-retry"' in page.text
    assert 'id="action-retry"' not in (await http.get("/users/ann")).text
    confirm, done = await _act(http, csrf, "erin", action="retry")
    assert "1 dead job(s) (console.test.boom) queued again" in confirm.text
    assert "retry erin: done" in (await http.get(done.headers["location"])).text
    again = queue.get(job_id)
    assert again is not None
    assert (again.state, again.attempts) == ("queued", 0)
    [entry] = _audit(bridge, "erin", "console.retry")
    assert entry.actor == "console:olga"
    assert entry.detail == {"operator": "olga", "outcome": "done", "requeued": [job_id], "left": []}

    confirm, _ = await _act(http, csrf, "erin", action="retry")
    assert "erin has no dead jobs" in confirm.text
    outcomes = [e.detail["outcome"] for e in _audit(bridge, "erin", "console.retry")]
    assert outcomes == ["refused", "done"]  # newest first
