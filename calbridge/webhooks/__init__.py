"""The webhook receiver: an ASGI app applications mount, also served by ``calbridge serve``.

::

    from calbridge.webhooks import make_webhook_app

    app.mount("/calbridge/hooks", make_webhook_app(runtime))   # FastAPI / Starlette

See ``docs/changes.md``.
"""

from __future__ import annotations

from ._app import (
    DEFAULT_DEBOUNCE,
    DEFAULT_MAX_BODY,
    DEFAULT_STORE_TIMEOUT,
    MAX_BATCH_ITEMS,
    MAX_LOOKUPS,
    WebhookReceiver,
    make_webhook_app,
)

__all__ = [
    "DEFAULT_DEBOUNCE",
    "DEFAULT_MAX_BODY",
    "DEFAULT_STORE_TIMEOUT",
    "MAX_BATCH_ITEMS",
    "MAX_LOOKUPS",
    "WebhookReceiver",
    "make_webhook_app",
]
