"""calbridge's change pipeline: sync engine, channel manager, delivery to the application.

Push notifications and polling only *trigger* work; what an application sees comes from
sync rounds that read a calendar's changes from its stored cursor and commit them in one
transaction with the cursor and the delivery jobs (see ``docs/changes.md``)::

    from calbridge.sync import SyncService
    from calbridge.jobs import Worker

    service = SyncService(runtime)
    service.on_changes(handle_batch)                     # async def handle_batch(batch)
    await service.channels.on_account_connected(account.id)
    await Worker(runtime.queue, service.handlers).run()
"""

from __future__ import annotations

from ._batch import (
    DEFAULT_TOLERANCE,
    ChangeBatch,
    WebhookVerificationError,
    batch_from_json,
    batch_to_json,
    generate_webhook_secret,
    sign_standard_webhook,
    verify_standard_webhook,
)
from ._channels import FAR_EDGE_DAYS, HEALTH_STATES, ChannelManager
from ._engine import DELIVER_KIND, SEND_KIND, CursorMoved, SyncEngine, SyncResult, calendar_key
from ._service import (
    HANDLER_KINDS,
    ChangeCallback,
    ChangeDispatcher,
    OutboundFailed,
    OutboundWebhook,
    SyncService,
    build_handlers,
    drain,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "DELIVER_KIND",
    "FAR_EDGE_DAYS",
    "HANDLER_KINDS",
    "HEALTH_STATES",
    "SEND_KIND",
    "ChangeBatch",
    "ChangeCallback",
    "ChangeDispatcher",
    "ChannelManager",
    "CursorMoved",
    "OutboundFailed",
    "OutboundWebhook",
    "SyncEngine",
    "SyncResult",
    "SyncService",
    "WebhookVerificationError",
    "batch_from_json",
    "batch_to_json",
    "build_handlers",
    "calendar_key",
    "drain",
    "generate_webhook_secret",
    "sign_standard_webhook",
    "verify_standard_webhook",
]
