"""``calbridge channels`` and ``calbridge serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from calbridge.cli import main
from tests.sync.support import memory_env


async def test_channels_lists_state_last_notification_and_expiry(sqlite_url: str) -> None:
    async with memory_env(sqlite_url) as env:
        ch = env.push_channel()
        await env.post(env.provider.notification_for(ch, seq=1))
        keys = env.runtime.config.keys
        assert keys is not None
        runner = CliRunner()
        args = ["channels", "--database-url", sqlite_url]
        out = runner.invoke(main, [*args, "--json"], env={"CALBRIDGE_KEYS": keys.reveal()})
        assert out.exit_code == 0, out.output
        (row,) = json.loads(out.output)
        assert row["channel_id"] == ch.id
        assert row["state"] == "active"
        assert row["last_notification"] is not None
        assert row["expires"].endswith("Z")
        assert ch.secret is not None
        assert ch.secret.reveal() not in out.output
        table = runner.invoke(main, args, env={"CALBRIDGE_KEYS": keys.reveal()})
        assert table.exit_code == 0
        assert "active" in table.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_over_http_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "CALBRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/serve.db"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "calbridge", "serve", "--port", str(port), "--path", "/hooks"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/hooks/nope", content=b"{}")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not start"
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
        assert r.status_code == 404
        google = httpx.post(
            f"http://127.0.0.1:{port}/hooks/google",
            headers={
                "x-goog-channel-id": "c",
                "x-goog-resource-id": "r",
                "x-goog-resource-state": "exists",
                "x-goog-message-number": "1",
            },
        )
        assert google.status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
