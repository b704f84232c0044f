"""``calbridge sandbox serve`` serves the Google sandbox under /google (real process, loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from calbridge_google import GoogleProvider
from calbridge_google.testing import sandbox_settings

from calbridge import AuthorizationRequest, ProviderSettings


@pytest.fixture
def served() -> Iterator[str]:
    env = {**os.environ, "CALBRIDGE_SANDBOX_CLIENT_SECRET": "cli-secret"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from calbridge.cli import main; main()", "sandbox", "serve",
         "--port", "0", "--client-id", "cli-client"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        yield urls["google"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def test_connect_through_the_served_sandbox(served: str) -> None:
    """OAuth with auto-consent, then calendarList, against the CLI-served sandbox."""
    base = sandbox_settings(served)
    settings = ProviderSettings(
        client_id="cli-client", client_secret="cli-secret", base_urls=base.base_urls
    )
    async with httpx.AsyncClient() as http:
        provider = GoogleProvider(http=http, settings=settings)
        url = provider.authorization_url(
            AuthorizationRequest(redirect_uri="http://app/cb", state="s", login_hint="e@x.com")
        )
        consent = await http.get(url)
        assert consent.status_code == 302
        code = parse_qs(urlsplit(consent.headers["location"]).query)["code"][0]
        grant = await provider.exchange_code(code=code, redirect_uri="http://app/cb")
        assert grant.email == "e@x.com"
        assert grant.tokens.refresh_token is not None
        r = await http.get(
            f"{served}/calendar/v3/users/me/calendarList",
            headers={"Authorization": f"Bearer {grant.tokens.access_token.reveal()}"},
        )
        assert r.json()["items"][0]["id"] == "e@x.com"
