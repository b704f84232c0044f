"""``calbridge sandbox serve`` in a subprocess: first stdout line, real time, control endpoints."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import ssl
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from calbridge_cronofy import CronofyProvider
from click.testing import CliRunner

import calbridge
from calbridge.cli import main


def test_help_lists_serve() -> None:
    result = CliRunner().invoke(main, ["sandbox", "serve", "--help"])
    assert result.exit_code == 0
    assert "--client-secret" in result.output
    assert "first line on stdout" in result.output


def test_serve_prints_urls_first_and_applies_writes_in_real_time() -> None:
    env = {**os.environ, "CALBRIDGE_SANDBOX_CLIENT_SECRET": "s3cret"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "calbridge",
            "sandbox",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--client-id",
            "app",
            "--tick",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        base = urls["cronofy"]
        assert base.startswith("http://127.0.0.1:")
        assert base.endswith("/cronofy")
        origin = base.removesuffix("/cronofy")
        with httpx.Client(timeout=10) as http:
            for _ in range(100):
                try:
                    http.get(origin + "/_sandbox/")
                    break
                except httpx.ConnectError:
                    time.sleep(0.05)
            r = http.get(
                base + "/oauth/authorize",
                params={
                    "response_type": "code",
                    "client_id": "app",
                    "redirect_uri": "http://a/cb",
                    "scope": "read_events create_event",
                    "login_hint": "z@example.com",
                },
            )
            code = parse_qs(urlparse(r.headers["location"]).query)["code"][0]
            token = http.post(
                base + "/oauth/token",
                json={
                    "client_id": "app",
                    "client_secret": "s3cret",
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": "http://a/cb",
                },
            ).json()
            auth = {"Authorization": f"Bearer {token['access_token']}"}
            cid = http.get(base + "/v1/calendars", headers=auth).json()["calendars"][0]
            start = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.time() + 86400))
            end = time.strftime("%Y-%m-%dT%H:30:00Z", time.gmtime(time.time() + 86400))
            r = http.post(
                f"{base}/v1/calendars/{cid['calendar_id']}/events",
                headers=auth,
                json={"event_id": "e1", "summary": "Soon", "start": start, "end": end},
            )
            assert r.status_code == 202
            native_cal = http.get(origin + "/_sandbox/users").json()["users"][0]["calendars"][0]
            deadline = time.monotonic() + 10
            events: list[object] = []
            while time.monotonic() < deadline and not events:
                time.sleep(0.1)
                events = http.get(f"{origin}/_sandbox/calendars/{native_cal['id']}/events").json()[
                    "events"
                ]
            assert [e["summary"] for e in events] == ["Soon"]  # type: ignore[index]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
        if proc.stdout is not None:
            proc.stdout.close()
    assert "s3cret" not in err


def test_serve_over_tls_with_a_private_ca(tmp_path: pathlib.Path) -> None:
    """--tls-dir: HTTPS on loopback; clients that trust ca.pem connect, others are refused."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "calbridge", "sandbox", "serve", "--tls-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = json.loads(proc.stdout.readline())["cronofy"]
        assert base.startswith("https://127.0.0.1:")
        assert (tmp_path / "key.pem").stat().st_mode & 0o077 == 0  # the key is private
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))

        async def calendars() -> list[calbridge.Calendar]:
            async with calbridge.make_http_client(verify=ctx) as http:
                for _ in range(100):
                    try:
                        await http.get(base.removesuffix("/cronofy") + "/_sandbox/")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.05)
                provider = CronofyProvider(
                    http=http,
                    settings=calbridge.ProviderSettings(
                        client_id="sandbox-client",
                        client_secret="sandbox-secret",
                        base_urls={"api": base, "app": base},
                    ),
                )
                url = provider.authorization_url(
                    calbridge.AuthorizationRequest(
                        redirect_uri="https://app/cb", state="s", login_hint="tls@example.com"
                    )
                )
                answer = await http.get(url)
                code = parse_qs(urlparse(answer.headers["location"]).query)["code"][0]
                grant = await provider.exchange_code(code=code, redirect_uri="https://app/cb")
                session = calbridge.Session(
                    account=calbridge.Account(
                        app_user_id="tls",
                        provider="cronofy",
                        provider_account_id=grant.provider_account_id,
                    ),
                    tokens=calbridge.StaticTokenSource(tokens=grant.tokens),
                )
                return await provider.list_calendars(session)

        assert [c.primary for c in asyncio.run(calendars())].count(True) == 1
        with httpx.Client(timeout=10) as untrusting, pytest.raises(httpx.ConnectError):
            untrusting.get(base.removesuffix("/cronofy") + "/_sandbox/")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
