"""Fault injection, per provider sandbox: latency, error statuses, notification fates, actions."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "FaultAction",
    "Faults",
    "InjectedError",
    "NotificationFate",
    "ProviderFaults",
    "mount_path",
]

#: what happens to the next notification a provider sandbox sends
NotificationFate = Literal["deliver", "drop", "duplicate"]

#: account-level faults a provider sandbox implements (see :meth:`Faults.trigger`)
FaultAction = Literal["expire_tokens", "revoke_tokens", "disconnect_profile", "reconnect_profile"]

FAULT_ACTIONS: tuple[str, ...] = (
    "expire_tokens",
    "revoke_tokens",
    "disconnect_profile",
    "reconnect_profile",
)


def mount_path(scope: Mapping[str, Any]) -> str:
    """A request's path below the mount that routed it (``/v1/events`` under ``/cronofy``):
    what fault ``path_prefix`` values and request counting are relative to."""
    root = str(scope.get("root_path", ""))
    path = str(scope.get("path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


@attrs.define
class InjectedError:
    """Answer the next ``times`` matching requests with ``status`` (``times=-1``: forever)."""

    status: int
    times: int = 1
    #: only requests whose path (below the provider prefix) starts with this
    path_prefix: str = ""
    #: a ``Retry-After`` header value to send (seconds), if any
    retry_after: float | None = None


@attrs.define
class ProviderFaults:
    """The faults armed for one provider sandbox."""

    #: seconds every request sleeps before being handled (real time)
    latency: float = 0.0
    errors: list[InjectedError] = attrs.field(factory=list)
    drop_notifications: int = 0
    duplicate_notifications: int = 0


class Faults:
    """Faults for every provider sandbox of a world, keyed by provider name.

    Request-level faults (latency, error statuses) are consumed by the provider sandbox's
    middleware through :meth:`take_error`; notification fates by the webhook deliverer;
    account-level actions (expired/revoked tokens, disconnected profile) are dispatched to
    handlers the provider sandbox registered with :meth:`on`.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._plans: dict[str, ProviderFaults] = {}
        self._handlers: dict[tuple[str, str], Callable[[str], None]] = {}

    def plan(self, provider: str) -> ProviderFaults:
        """The (mutable) fault plan of ``provider``."""
        with self._lock:
            return self._plans.setdefault(provider, ProviderFaults())

    def set_latency(self, provider: str, seconds: float) -> None:
        """Delay every request to ``provider`` by ``seconds`` (real time)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self.plan(provider).latency = seconds

    def fail_next(
        self,
        provider: str,
        status: int,
        *,
        times: int = 1,
        path_prefix: str = "",
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``times`` requests (under ``path_prefix``) with ``status``."""
        if not 400 <= status <= 599:
            raise ValueError("an injected error status is 4xx or 5xx")
        with self._lock:
            self.plan(provider).errors.append(
                InjectedError(
                    status=status, times=times, path_prefix=path_prefix, retry_after=retry_after
                )
            )

    def take_error(self, provider: str, path: str) -> InjectedError | None:
        """Consume and return the injected error for a request to ``path``, if any."""
        with self._lock:
            plan = self.plan(provider)
            for err in plan.errors:
                if path.startswith(err.path_prefix):
                    if err.times > 0:
                        err.times -= 1
                        if err.times == 0:
                            plan.errors.remove(err)
                    return err
            return None

    async def intercept(self, provider: str, path: str) -> InjectedError | None:
        """What one request to ``provider`` at ``path`` (see :func:`mount_path`) meets
        before it is handled: the armed latency (slept here, in real time), then the next
        injected error, if any, which the sandbox answers in its provider's envelope."""
        delay = self.latency(provider)
        if delay:
            await asyncio.sleep(delay)
        return self.take_error(provider, path)

    def latency(self, provider: str) -> float:
        """Seconds each request to ``provider`` is delayed."""
        with self._lock:
            return self.plan(provider).latency

    def drop_notifications(self, provider: str, count: int = 1) -> None:
        """Silently lose the next ``count`` notifications of ``provider``."""
        with self._lock:
            self.plan(provider).drop_notifications += count

    def duplicate_notifications(self, provider: str, count: int = 1) -> None:
        """Send each of the next ``count`` notifications of ``provider`` twice."""
        with self._lock:
            self.plan(provider).duplicate_notifications += count

    def notification_fate(self, provider: str) -> NotificationFate:
        """Consume and return what happens to the next notification of ``provider``."""
        with self._lock:
            plan = self.plan(provider)
            if plan.drop_notifications > 0:
                plan.drop_notifications -= 1
                return "drop"
            if plan.duplicate_notifications > 0:
                plan.duplicate_notifications -= 1
                return "duplicate"
            return "deliver"

    def on(self, provider: str, action: str, handler: Callable[[str], None]) -> None:
        """Register how ``provider``'s sandbox performs ``action`` for a user email."""
        if action not in FAULT_ACTIONS:
            raise ValueError(f"unknown fault action {action!r}; known: {FAULT_ACTIONS}")
        with self._lock:
            self._handlers[(provider, action)] = handler

    def trigger(self, provider: str, action: str, email: str) -> None:
        """Perform an account-level fault (``"expire_tokens"``, ``"revoke_tokens"``,
        ``"disconnect_profile"``, ``"reconnect_profile"``) for the user ``email``.

        Raises ``LookupError`` when ``provider``'s sandbox does not implement ``action``.
        """
        with self._lock:
            handler = self._handlers.get((provider, action))
        if handler is None:
            raise LookupError(f"the {provider!r} sandbox does not implement {action!r}")
        handler(email)

    def clear(self, provider: str | None = None) -> None:
        """Disarm every request and notification fault (of one provider, or all)."""
        with self._lock:
            if provider is None:
                self._plans.clear()
            else:
                self._plans.pop(provider, None)
