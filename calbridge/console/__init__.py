"""The operator console: migration cohorts and users in the browser, and ``/metrics``.

Server-rendered (Starlette, Jinja2 templates, no JavaScript), behind one operator
password (:class:`ConsoleSettings`), with signed session cookies and a CSRF token on
every form. Run it with ``calbridge console`` or mount :func:`make_console_app` in an
ASGI app; see ``docs/operations.md``.

Needs the ``console`` extra (``pip install "calbridge[console]"``).
"""

from __future__ import annotations

from ._app import CONSOLE_CSP, make_console_app
from ._auth import ENV_PASSWORD, ENV_SESSION_KEY, ConsoleSettings, hash_password, verify_password
from ._metrics import StoreCollector, WebhookCounter, make_registry, metrics_endpoint

__all__ = [
    "CONSOLE_CSP",
    "ENV_PASSWORD",
    "ENV_SESSION_KEY",
    "ConsoleSettings",
    "StoreCollector",
    "WebhookCounter",
    "hash_password",
    "make_console_app",
    "make_registry",
    "metrics_endpoint",
    "verify_password",
]
