"""calbridge's plugin hooks: the plugin author's reference.

Naming rule: hooks are unprefixed verbs (``register_providers``, ``make_change_source``);
the module name already says "calbridge". Implement a hook with :data:`hookimpl`::

    import calbridge

    @calbridge.hookimpl
    def register_providers(register):
        register(ExampleProvider)

and expose the module through the ``calbridge`` entry-point group in your ``pyproject.toml``::

    [project.entry-points.calbridge]
    example = "calbridge_example"

Every hook is listed in ``docs/plugins/hooks.md`` (generated from these docstrings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

import attrs
import pluggy

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from .models import Account, AccountStatus
    from .provider import Provider
    from .sandbox import World
    from .sync import ChangeBatch

__all__ = [
    "ChangeSource",
    "ProviderRegistrar",
    "SandboxFactory",
    "SandboxRegistrar",
    "account_status_changed",
    "changes_synced",
    "hookimpl",
    "hookspec",
    "make_change_source",
    "register_providers",
    "register_sandboxes",
]

PROJECT = "calbridge"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorator marking a function as a calbridge hook implementation.
hookimpl = pluggy.HookimplMarker(PROJECT)


class ProviderRegistrar(Protocol):
    """The callback passed to :func:`register_providers`.

    Core owns its keyword arguments, so new options never break existing plugins.
    """

    def __call__(
        self,
        provider_cls: type[Provider],
        *,
        aliases: Sequence[str] = (),
    ) -> None:
        """Register ``provider_cls`` under its ``name`` (and ``aliases``).

        Raises :class:`calbridge.errors.PluginError` for an invalid name and
        :class:`calbridge.errors.ProviderConflictError` naming both plugins for a duplicate.
        """
        ...


#: builds one provider's sandbox ASGI app as a view of a :class:`calbridge.sandbox.World`
SandboxFactory = Callable[["World"], "ASGIApp"]


class SandboxRegistrar(Protocol):
    """The callback passed to :func:`register_sandboxes`."""

    def __call__(self, provider: str, factory: SandboxFactory) -> None:
        """Register ``factory`` as the sandbox of ``provider`` (served under ``/{provider}``).

        Raises :class:`calbridge.errors.PluginError` for an invalid name and
        :class:`calbridge.errors.ProviderConflictError` naming both plugins for a duplicate.
        """
        ...


@attrs.frozen(kw_only=True)
class ChangeSource:
    """How changes of one provider's calendars are observed (answer of :func:`make_change_source`).

    ``kind`` is ``"push"`` (provider channels to a webhook) or ``"poll"`` (periodic
    incremental reads every ``interval_seconds``, jittered).
    """

    kind: Literal["push", "poll"]
    interval_seconds: float | None = None
    #: plugin that answered (filled by core for ``calbridge channels``)
    reason: str = ""


@hookspec
def register_providers(register: ProviderRegistrar) -> None:
    """Register provider classes.

    Args:
        register: call ``register(ProviderClass, aliases=(...))`` once per provider.

    Example::

        @calbridge.hookimpl
        def register_providers(register):
            register(ExampleProvider, aliases=("ex",))

    .. versionadded:: 0.1
    """


@hookspec
def register_sandboxes(register: SandboxRegistrar) -> None:
    """Register provider sandboxes: local emulators of a provider's HTTP API.

    Each factory receives the shared :class:`calbridge.sandbox.World` (users, native
    calendars, clock, faults, webhook delivery) and returns an ASGI app answering the
    provider's wire protocol. ``calbridge sandbox serve`` mounts every registered app
    under ``/{provider}`` on one port; tests can call the app in-process through
    ``httpx.ASGITransport``.

    Args:
        register: call ``register("example", factory)`` once per provider sandbox.

    Example::

        @calbridge.hookimpl
        def register_sandboxes(register):
            register("example", lambda world: ExampleSandbox(world).app)

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def make_change_source(provider: Provider, callback_url: str | None) -> ChangeSource | None:
    """Decide how changes of ``provider``'s calendars are observed. First answer wins.

    A provider plugin answers ``ChangeSource(kind="push")`` for its own provider when it
    can push and a public ``callback_url`` is configured, and ``None`` otherwise. The
    built-in ``calbridge_polling`` plugin implements this hook with ``trylast=True`` and
    always answers ``"poll"``, so core never branches on push support.

    Args:
        provider: the provider instance.
        callback_url: the public webhook URL for this provider, or None when none is set.

    Returns:
        a :class:`ChangeSource`, or None to let other plugins decide.

    Example::

        @calbridge.hookimpl
        def make_change_source(provider, callback_url):
            if provider.name == "example" and callback_url:
                return calbridge.ChangeSource(kind="push")
            return None

    .. versionadded:: 0.1
    """


@hookspec
def account_status_changed(account: Account, old_status: AccountStatus, reason: str) -> None:
    """Called once when an account's status changes (e.g. it now needs re-authorization).

    Args:
        account: the account, carrying its new ``status``.
        old_status: the status before the change.
        reason: a short, secret-free explanation (``"invalid_grant"``, ``"revoked"``).

    Example::

        @calbridge.hookimpl
        def account_status_changed(account, old_status, reason):
            if account.status == "needs_reauth":
                send_reconnect_email(account.app_user_id)

    .. versionadded:: 0.1
    """


@hookspec
def changes_synced(batch: ChangeBatch) -> None:
    """Called with every batch of changes a sync round committed to the event cache.

    Delivery is at-least-once: after a crash or a failing implementation the same batch
    comes again with the same ``batch.id``, so deduplicate on it. Batches of one calendar
    arrive in commit order unless a delivery had to be retried. An exception raised here
    makes calbridge retry the whole delivery later (with backoff).

    Args:
        batch: a :class:`calbridge.sync.ChangeBatch`: ``account_id``, ``provider``,
            ``calendar_id``, the ``upserted`` events, the ``deleted`` event ids, the
            ``cursor`` the round ended at and a stable ``id``.

    Example::

        @calbridge.hookimpl
        def changes_synced(batch):
            if not already_seen(batch.id):
                for event in batch.upserted:
                    reindex(event)
                for event_id in batch.deleted:
                    unindex(batch.calendar_id, event_id)

    .. versionadded:: 0.1
    """
