"""The console in a real browser: headless Chromium driving ``calbridge console`` over
loopback, on a store populated through the real sandboxes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from calbridge._config import BridgeConfig
from calbridge.bridge import CalBridge
from calbridge.migration import Migrator
from calbridge.router import Phase

from .conftest import PASSWORD, Console

#: set to refresh the screenshots of docs/operations.md from this test's run
UPDATE_DOCS = os.environ.get("CALBRIDGE_UPDATE_SCREENSHOTS") == "1"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
#: the screenshots docs/operations.md shows
DOC_SHOTS = ("login", "cohorts", "user", "confirm-cutover")


def _shot(driver: Any, tmp_path: Path, name: str) -> Path:
    """Save a PNG of the whole page under tmp_path (and docs/img when asked)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(800, min(int(height) + 40, 3000)))
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    if UPDATE_DOCS and name in DOC_SHOTS:
        DOCS_IMG.mkdir(exist_ok=True)
        (DOCS_IMG / f"console-{name}.png").write_bytes(path.read_bytes())
    driver.set_window_size(1280, 1100)
    return path


def _text(driver: Any, css: str) -> str:
    from selenium.common.exceptions import NoSuchElementException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except NoSuchElementException:
        raise AssertionError(f"no {css} at {driver.current_url}:\n{driver.page_source}") from None


def _click(driver: Any, css: str) -> None:
    """Click a link or button and wait until the next page has replaced this one (every
    click of this test navigates: reading an element sooner could read the old page)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 30)
    page = driver.find_element(By.TAG_NAME, "html")

    def gone(_driver: Any) -> bool:
        """The page was replaced (Chromium reports a node of a replaced document either as
        stale or as one that "does not belong to the document")."""
        try:
            return bool(expected_conditions.staleness_of(page)(driver))
        except WebDriverException:
            return True

    for attempt in range(3):
        try:  # the element of the document as it is now (not one being replaced)
            wait.until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, css))).click()
            break
        except (StaleElementReferenceException, WebDriverException):
            if gone(driver):
                break  # the click did navigate: the error came from the page going away
            if attempt == 2:
                raise
    wait.until(gone)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def _log_in(driver: Any, console: Console, name: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "operator-name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password)
    _click(driver, "#login")


async def _state(env: dict[str, str], user: str) -> tuple[Phase, list[Any]]:
    """The user's phase and audit entries, read from the store by a fresh bridge."""
    bridge = CalBridge(BridgeConfig.from_file(env["CALBRIDGE_CONFIG"]))
    try:
        status = Migrator(bridge.runtime).status(user)
        return status.phase, bridge.store.audit_log.audit_entries(app_user_id=user)
    finally:
        await bridge.aclose()


async def test_operator_logs_in_finds_a_stuck_user_and_rolls_them_back(
    console: Console, browser: Any, tmp_path: Path
) -> None:
    """An operator is refused with a wrong password, logs in, sees the cohorts by phase,
    opens dave (stuck at dual: cutover refused by the parity guard), rolls him back with
    its confirmation step, and the store, the page and the audit log (naming the
    operator) all show it."""
    driver = browser
    driver.get(console.base_url + "/")
    assert driver.current_url == console.base_url + "/login"  # not logged in: the login page
    _shot(driver, tmp_path, "login")

    _log_in(driver, console, "alice", "not the password")
    assert _text(driver, "#error") == "wrong password"
    assert "/login" in driver.current_url

    _log_in(driver, console, "alice", PASSWORD)
    assert _text(driver, "#operator") == "alice"
    counts = {p: _text(driver, f"#phase-{p} .count") for p in ("none", "legacy", "shadow", "dual")}
    assert counts == {"none": "1", "legacy": "1", "shadow": "1", "dual": "1"}

    _click(driver, "#phase-dual")
    assert "dave" in _text(driver, "#users")
    assert "parity has not been clean" in _text(driver, "#users td.blocked")  # why stuck
    _shot(driver, tmp_path, "cohorts")

    _click(driver, "#users a")  # dave
    assert _text(driver, "h1 #phase") == "dual"
    assert _text(driver, "#route-provider") == "google"
    assert "migration phase dual" in _text(driver, "#explain")
    assert {"google", "cronofy"} <= set(_text(driver, "#accounts").split())
    _shot(driver, tmp_path, "user")

    # why dave is stuck: the cutover confirmation shows the parity guard refusing
    _click(driver, "#action-cutover")
    assert "parity" in _text(driver, "#preview")
    _shot(driver, tmp_path, "confirm-cutover")
    _click(driver, "#cancel")

    _click(driver, "#action-rollback")
    assert "Confirm: rollback dave" in _text(driver, "h1")
    assert "guards allow it" in _text(driver, "#preview")
    assert (await _state(console.env, "dave"))[0] is Phase.DUAL  # not before confirming
    _click(driver, "#confirm")

    assert _text(driver, "#flash") == "rollback dave: moved"
    assert _text(driver, "h1 #phase") == "legacy"
    assert "console:alice" in _text(driver, "#audit")
    _shot(driver, tmp_path, "user-rolled-back")

    phase, audit = await _state(console.env, "dave")
    assert phase is Phase.LEGACY
    mine = [e for e in audit if e.action == "console.rollback"]
    assert [(e.actor, e.detail["operator"], e.detail["outcome"]) for e in mine] == [
        ("console:alice", "alice", "moved")
    ]
    assert audit[1].action == "migration.legacy"  # the migrator's own entry, just before

    # the cohorts follow: dual is empty, legacy holds bob and dave
    driver.get(console.base_url + "/?phase=legacy")
    assert _text(driver, "#phase-dual .count") == "0"
    assert {"bob", "dave"} <= set(_text(driver, "#users").split())

    # the session cookie is HttpOnly and SameSite=Strict
    cookie = driver.get_cookie("calbridge_console")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"

    # a POST without the CSRF token, with the operator's own session cookie, changes nothing
    jar = {"calbridge_console": cookie["value"]}
    async with httpx.AsyncClient(base_url=console.base_url, cookies=jar) as http:
        for form in (
            {"action": "rollback", "confirm": "yes"},
            {"action": "rollback", "confirm": "yes", "csrf": "forged"},
        ):
            refused = await http.post("/actions/ann", data=form)
            assert refused.status_code == 403
            assert "CSRF" in refused.text
    assert (await _state(console.env, "ann"))[0] is Phase.SHADOW

    # logging out ends the session: the next page asks for the login again
    _click(driver, "header button")
    driver.get(console.base_url + "/users/ann")
    assert driver.current_url == console.base_url + "/login"


@pytest.mark.parametrize("name", DOC_SHOTS)
def test_docs_screenshots_exist(name: str) -> None:
    """docs/operations.md shows screenshots this test made (CALBRIDGE_UPDATE_SCREENSHOTS=1)."""
    path = DOCS_IMG / f"console-{name}.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"img/console-{name}.png" in (DOCS_IMG.parent / "operations.md").read_text()
