"""Helpers for tests of code that uses the CalDAV provider: a real Radicale server.

:class:`RadicaleServer` starts ``python -m radicale`` (from PyPI: ``pip install radicale``)
on a free loopback port with a generated configuration and a throwaway storage folder,
and stops it again::

    with RadicaleServer(tmp_path, users={"alice": "app-password"}) as radicale:
        href = radicale.make_calendar("alice", "work", display_name="Work", color="#ff0000")
        settings = calbridge.ProviderSettings(base_urls={"api": radicale.url})

``caldav_rig`` gives a provider and a session over it, for one user.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal
from xml.sax.saxutils import escape

import attrs
import httpx

import calbridge
from calbridge import Account, ProviderSettings, Session, StaticTokenSource

from ._connect import caldav_credentials
from ._provider import CalDAVProvider

__all__ = ["ADMIN", "CalDAVRig", "RadicaleServer", "caldav_rig", "free_port"]

#: a user of every test server who may create collections anywhere (read-only calendars)
ADMIN = "calbridge-admin"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RadicaleServer:
    """A Radicale process on ``127.0.0.1``, storing under ``folder`` (use a temporary one).

    Args:
        folder: where the configuration, the users file and the collections go.
        users: user name -> password (``auth type = htpasswd``, plain text file).
        auth: ``"htpasswd"`` (the default) or ``"none"`` (any user name, no password).
    """

    def __init__(
        self,
        folder: Path,
        *,
        users: Mapping[str, str] | None = None,
        auth: Literal["htpasswd", "none"] = "htpasswd",
        start_timeout: float = 30.0,
    ) -> None:
        self.folder = Path(folder)
        self.users = dict(users or {})
        self.auth = auth
        self.start_timeout = start_timeout
        self.port = 0
        self._admin_password = uuid.uuid4().hex
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's root URL (``http://127.0.0.1:PORT/``)."""
        return f"http://127.0.0.1:{self.port}/"

    def _config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        users = self.folder / "users"
        every = {**self.users, ADMIN: self._admin_password}
        users.write_text("".join(f"{u}:{p}\n" for u, p in every.items()))
        auth = (
            f"type = htpasswd\nhtpasswd_filename = {users}\nhtpasswd_encryption = plain\n"
            "delay = 0\n"
            if self.auth == "htpasswd"
            else "type = none\n"
        )
        config = self.folder / "config"
        config.write_text(
            f"[server]\nhosts = 127.0.0.1:{self.port}\n\n"
            f"[auth]\n{auth}\n"
            f"[storage]\nfilesystem_folder = {self.folder / 'collections'}\n\n"
            f"[rights]\ntype = from_file\nfile = {self._rights()}\n\n"
            "[web]\ntype = none\n\n"
            "[logging]\nlevel = warning\n"
        )
        return config

    def _rights(self) -> Path:
        # owners read and write their collections, except one named ``read-only`` (made
        # by the admin user, only readable by its owner): a read-only calendar
        rules = self.folder / "rights"
        rules.write_text(
            f"[admin]\nuser: {ADMIN}\ncollection: .*\npermissions: RrWw\n\n"
            "[root]\nuser: .*\ncollection:\npermissions: R\n\n"
            "[principal]\nuser: .+\ncollection: {user}\npermissions: RW\n\n"
            "[read-only]\nuser: .+\ncollection: {user}/read-only\npermissions: rR\n\n"
            "[calendars]\nuser: .+\ncollection: {user}/[^/]+\npermissions: rw\n"
        )
        return rules

    def start(self) -> RadicaleServer:
        """Start the process and wait until it answers."""
        self.port = free_port()
        config = self._config()
        log = (self.folder / "radicale.log").open("wb")
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "radicale", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"radicale exited: {self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"radicale did not answer within {self.start_timeout} s")

    def log(self) -> str:
        """What the server wrote."""
        path = self.folder / "radicale.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop the process (it is gone when this returns)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> RadicaleServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def set_password(self, user: str, password: str) -> None:
        """Change (or add) a user's password, as a user revoking an app password does."""
        self.users[user] = password
        self._config()

    def make_calendar(
        self,
        user: str,
        slug: str | None = None,
        *,
        display_name: str | None = None,
        color: str | None = None,
    ) -> str:
        """Create a calendar collection of ``user`` (MKCOL); returns its href."""
        slug = slug or uuid.uuid4().hex[:12]
        props = "<d:resourcetype><d:collection/><c:calendar/></d:resourcetype>"
        if display_name:
            props += f"<d:displayname>{escape(display_name)}</d:displayname>"
        if color:
            props += f"<i:calendar-color>{escape(color)}</i:calendar-color>"
        body = (
            '<?xml version="1.0" encoding="utf-8"?><d:mkcol xmlns:d="DAV:" '
            'xmlns:c="urn:ietf:params:xml:ns:caldav" xmlns:i="http://apple.com/ns/ical/">'
            f"<d:set><d:prop>{props}</d:prop></d:set></d:mkcol>"
        )
        href = f"/{user}/{slug}/"
        # the user's first authenticated request makes Radicale create their principal
        httpx.request(
            "PROPFIND",
            f"{self.url}{user}/",
            auth=(user, self.users.get(user, "")),
            headers={"Depth": "0"},
            timeout=10,
        )
        answer = httpx.request(
            "MKCOL",
            self.url.rstrip("/") + href,
            content=body.encode(),
            auth=(ADMIN, self._admin_password),
            headers={"Content-Type": "application/xml; charset=utf-8"},
            timeout=10,
        )
        if answer.status_code != 201:
            raise RuntimeError(f"MKCOL {href}: HTTP {answer.status_code} {answer.text[:200]}")
        return href

    def put(self, user: str, href: str, ics: str) -> str:
        """PUT a resource behind the provider's back (another client's write); its ETag."""
        answer = httpx.put(
            self.url.rstrip("/") + href,
            content=ics.encode(),
            auth=(user, self.users.get(user, "")),
            headers={"Content-Type": "text/calendar; charset=utf-8"},
            timeout=10,
        )
        if answer.status_code not in (200, 201, 204):
            raise RuntimeError(f"PUT {href}: HTTP {answer.status_code} {answer.text[:200]}")
        return str(answer.headers.get("etag", ""))


@attrs.define
class CalDAVRig:
    """A provider and a session for one Radicale user, and that user's calendar."""

    server: RadicaleServer
    provider: CalDAVProvider
    session: Session
    calendar_id: str
    user: str

    def now(self) -> dt.datetime:
        """Radicale runs on the real clock."""
        return dt.datetime.now(dt.UTC)


@contextlib.asynccontextmanager
async def caldav_rig(
    server: RadicaleServer,
    user: str,
    *,
    page_size: int = 50,
    options: Mapping[str, object] | None = None,
) -> AsyncIterator[CalDAVRig]:
    """A provider on a fresh HTTP client, a session of ``user`` and a new empty calendar."""
    http = calbridge.make_http_client(breaker=None)
    settings = ProviderSettings(
        base_urls={"api": server.url}, options={"page_size": page_size, **(options or {})}
    )
    provider = CalDAVProvider(http=http, settings=settings)
    tokens = caldav_credentials(user, server.users.get(user, "x"))
    session = Session(
        account=Account(app_user_id=user, provider="caldav", provider_account_id=user),
        tokens=StaticTokenSource(tokens),
    )
    calendar_id = server.make_calendar(user, display_name=f"Calendar of {user}")
    try:
        yield CalDAVRig(
            server=server, provider=provider, session=session, calendar_id=calendar_id, user=user
        )
    finally:
        await http.aclose()
