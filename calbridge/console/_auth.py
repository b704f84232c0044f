"""The console's login: one operator password, signed session cookies, CSRF tokens.

* The password comes from ``$CALBRIDGE_CONSOLE_PASSWORD``: either a hash made by
  ``calbridge console --hash-password`` (``pbkdf2_sha256$<iterations>$<salt>$<hash>``,
  recommended) or the password itself. Either way a login attempt is compared in
  constant time (:func:`verify_password`).
* The session is a cookie signed with ``$CALBRIDGE_CONSOLE_SESSION_KEY`` (a random key
  per process when unset: sessions then end when the console restarts), holding the
  operator's name and a CSRF token; it is ``HttpOnly``, ``SameSite=Strict``, ``Secure``
  unless turned off for plain-HTTP development, and expires after ``session_ttl``.
* Every POST carries the session's CSRF token in the form (``csrf``); a form without it,
  or with another session's, is refused (403) before anything is read or written.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from typing import Any, Final

import attrs
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .._secret import Secret
from ..errors import ConfigurationError

__all__ = [
    "ENV_PASSWORD",
    "ENV_SESSION_KEY",
    "OPERATOR_RE",
    "ConsoleSettings",
    "SessionSigner",
    "hash_password",
    "verify_password",
]

#: the operator password, or its hash (``calbridge console --hash-password``)
ENV_PASSWORD: Final = "CALBRIDGE_CONSOLE_PASSWORD"  # noqa: S105 - a variable name
#: the key signing session cookies (any long random string)
ENV_SESSION_KEY: Final = "CALBRIDGE_CONSOLE_SESSION_KEY"
#: PBKDF2 rounds of a hash made now
ITERATIONS: Final = 600_000
_SCHEME: Final = "pbkdf2_sha256"
#: what an operator may call themselves (it names them in the audit log)
OPERATOR_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,47}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<hash>`` of ``password`` (salt: 16 random bytes)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(attempt: str, configured: Secret) -> bool:
    """Whether ``attempt`` is the configured password (a hash from :func:`hash_password`,
    or the password itself), compared in constant time."""
    stored = configured.reveal()
    if stored.startswith(_SCHEME + "$"):
        try:
            _, rounds, salt, digest = stored.split("$")
            expected = _unb64(digest)
            got = hashlib.pbkdf2_hmac("sha256", attempt.encode(), _unb64(salt), int(rounds))
        except ValueError:
            raise ConfigurationError(
                f"{ENV_PASSWORD} looks like a {_SCHEME} hash but is malformed: make it "
                "again with `calbridge console --hash-password`"
            ) from None
        return hmac.compare_digest(got, expected)
    # plain secret: compare digests, so neither length nor prefix leaks through timing
    return hmac.compare_digest(
        hashlib.sha256(attempt.encode()).digest(), hashlib.sha256(stored.encode()).digest()
    )


@attrs.frozen(kw_only=True)
class ConsoleSettings:
    """How the console lets operators in.

    Attributes:
        password: the operator password or its hash; None with ``login=False`` only.
        session_key: signs the session cookies.
        login: False serves the console without a login (the operator is ``local``):
            for a console bound to loopback on a developer's machine only.
        secure_cookies: mark the session cookie ``Secure`` (HTTPS only); turn off only
            for plain HTTP on loopback.
        session_ttl: seconds a session lasts after login.
        metrics_token: when set, ``/metrics`` wants ``Authorization: Bearer <token>``.
    """

    password: Secret | None
    session_key: Secret = attrs.field(factory=lambda: Secret(secrets.token_urlsafe(32)))
    login: bool = True
    secure_cookies: bool = True
    session_ttl: float = 8 * 3600.0
    metrics_token: Secret | None = None

    def __attrs_post_init__(self) -> None:
        if self.login and not self.password:
            raise ConfigurationError(
                f"the console needs an operator password: set {ENV_PASSWORD} (a hash from "
                "`calbridge console --hash-password`, or the password itself)"
            )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> ConsoleSettings:
        """Settings from ``$CALBRIDGE_CONSOLE_PASSWORD``, ``$CALBRIDGE_CONSOLE_SESSION_KEY``
        and ``$CALBRIDGE_METRICS_TOKEN``; ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "password": Secret(env[ENV_PASSWORD]) if env.get(ENV_PASSWORD) else None,
            "metrics_token": (
                Secret(env["CALBRIDGE_METRICS_TOKEN"])
                if env.get("CALBRIDGE_METRICS_TOKEN")
                else None
            ),
        }
        if env.get(ENV_SESSION_KEY):
            values["session_key"] = Secret(env[ENV_SESSION_KEY])
        values.update(overrides)
        return cls(**values)


class SessionSigner:
    """Signs and reads the session cookie: ``{"csrf": token, "op": operator or None}``."""

    cookie: Final = "calbridge_console"

    def __init__(self, settings: ConsoleSettings) -> None:
        self._serializer = URLSafeTimedSerializer(
            settings.session_key.reveal(), salt="calbridge.console.session"
        )
        self._ttl = settings.session_ttl

    def load(self, value: str | None) -> dict[str, Any] | None:
        """The session in a cookie value; None when absent, forged or expired."""
        if not value:
            return None
        try:
            data = self._serializer.loads(value, max_age=int(self._ttl))
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        return data

    def dump(self, session: Mapping[str, Any]) -> str:
        """The cookie value of ``session``."""
        return str(self._serializer.dumps(dict(session)))

    @staticmethod
    def fresh(operator: str | None = None) -> dict[str, Any]:
        """A new session (new CSRF token): at the first visit and at every login."""
        return {"csrf": secrets.token_urlsafe(32), "op": operator}

    @staticmethod
    def csrf_ok(session: Mapping[str, Any] | None, token: str | None) -> bool:
        """Whether a form's ``token`` is its session's CSRF token (constant time)."""
        if session is None or not token:
            return False
        return hmac.compare_digest(str(session["csrf"]).encode(), token.encode())
