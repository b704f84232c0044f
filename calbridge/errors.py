"""The calbridge error tree.

Every error calbridge raises on purpose derives from :class:`CalbridgeError`::

    CalbridgeError
    ├── ConfigurationError            bad or missing configuration (keys, URLs, settings)
    ├── PluginError                   a plugin failed to load, validate or register (.plugin)
    │   └── ProviderConflictError     two plugins registered one provider name (.plugins)
    ├── ProviderNotFoundError         no provider of that name is loaded (also a LookupError)
    ├── IdempotencyConflict           an idempotency key reused with a different draft (.key)
    ├── StoreError                    the state store failed or is unavailable
    │   └── DecryptionError           a ciphertext could not be decrypted (wrong key, copied row)
    ├── OAuthError                    an OAuth callback was refused before any token request
    │   └── InvalidStateError         missing, reused, expired or foreign ``state``
    └── ProviderError                 a provider call failed (.provider, .status)
        ├── ReauthRequired            connect again (invalid_grant, revoked, 403 scope)
        ├── RateLimited               throttled; retry after ``.retry_after`` seconds
        ├── NotFound                  the calendar, event or channel does not exist
        ├── Conflict                  etag / If-Match mismatch or duplicate id
        ├── InvalidRequest            the provider refused the input (.field_errors)
        ├── Unavailable               5xx, timeouts, connection errors, maintenance
        ├── NotSupported              this provider cannot do that (.capability)
        ├── SyncCursorExpired         the stored cursor is gone: wipe and resync in full
        ├── NotificationRejected      a push notification failed verification (answer 4xx)
        └── ProviderResponseError     the provider answered something calbridge cannot read

Messages say what to do next. No message, repr or attribute ever carries a secret:
tokens and client secrets travel as :class:`calbridge.Secret`, whose text is ``***``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "CalbridgeError",
    "ConfigurationError",
    "Conflict",
    "DecryptionError",
    "IdempotencyConflict",
    "InvalidRequest",
    "InvalidStateError",
    "NotFound",
    "NotSupported",
    "NotificationRejected",
    "OAuthError",
    "PluginError",
    "ProviderConflictError",
    "ProviderError",
    "ProviderNotFoundError",
    "ProviderResponseError",
    "RateLimited",
    "ReauthRequired",
    "StoreError",
    "SyncCursorExpired",
    "Unavailable",
]


class CalbridgeError(Exception):
    """Base of every error calbridge raises on purpose."""


class ConfigurationError(CalbridgeError):
    """Configuration is missing or invalid; the message names the setting to fix."""


class PluginError(CalbridgeError):
    """A plugin could not be loaded, validated or registered."""

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin


class ProviderConflictError(PluginError):
    """Two plugins registered the same provider name (or alias)."""

    def __init__(self, name: str, plugins: Sequence[str]) -> None:
        listed = ", ".join(repr(p) for p in plugins)
        super().__init__(
            f"provider name {name!r} is registered by several plugins: {listed}. "
            "Uninstall one of them or block it with CALBRIDGE_DISABLE_PLUGINS.",
            plugin=plugins[-1] if plugins else None,
        )
        self.name = name
        self.plugins = tuple(plugins)


class ProviderNotFoundError(CalbridgeError, LookupError):
    """No loaded provider has that name."""

    def __init__(self, name: str, known: Sequence[str] = ()) -> None:
        hint = f" Loaded providers: {', '.join(sorted(known))}." if known else ""
        super().__init__(
            f"no provider named {name!r} is loaded.{hint} "
            "Install its plugin or check CALBRIDGE_LOAD_PLUGINS."
        )
        self.name = name


class IdempotencyConflict(CalbridgeError):
    """An idempotency key was used again with a different draft (or calendar).

    The first request's event stands; nothing was created or changed. The message names
    the key, never the event's content.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"idempotency key {key!r} was already used to create a different event; "
            "use a new key for a new event, or update_event() to change this one"
        )


class StoreError(CalbridgeError):
    """The state store failed or is unavailable."""


class DecryptionError(StoreError):
    """A stored ciphertext could not be decrypted with any configured key."""


class OAuthError(CalbridgeError):
    """An OAuth flow was refused (before any token request was made)."""


class InvalidStateError(OAuthError):
    """The callback's ``state`` is missing, unknown, reused, expired or bound elsewhere."""


class ProviderError(CalbridgeError):
    """A provider call failed.

    Attributes:
        provider: the provider's registered name.
        status: the HTTP status code, when there was a response.
    """

    default_hint = ""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
    ) -> None:
        self.provider = provider
        self.status = status
        text = f"[{provider}] {message}"
        if status is not None:
            text += f" (HTTP {status})"
        if self.default_hint:
            text += f". {self.default_hint}"
        super().__init__(text)


class ReauthRequired(ProviderError):
    """The user's authorization is no longer valid."""

    default_hint = "Send the user through the connect flow again."


class RateLimited(ProviderError):
    """The provider throttled the call; retry after ``retry_after`` seconds."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        if retry_after is not None:
            message = f"{message}; retry after {retry_after:g} s"
        super().__init__(message, provider=provider, status=status)


class NotFound(ProviderError):
    """The calendar, event or channel does not exist (or is not visible)."""


class Conflict(ProviderError):
    """The resource changed since it was read (etag mismatch) or already exists."""

    default_hint = "Read the event again and retry with its new etag."


class InvalidRequest(ProviderError):
    """The provider refused the input.

    Attributes:
        field_errors: field name to the provider's messages for it.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = 400,
        field_errors: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.field_errors = {k: tuple(v) for k, v in (field_errors or {}).items()}
        if self.field_errors:
            detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in self.field_errors.items())
            message = f"{message}: {detail}"
        super().__init__(message, provider=provider, status=status)


class Unavailable(ProviderError):
    """The provider is down, timing out or unreachable; retry later."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider, status=status)


class NotSupported(ProviderError):
    """This provider cannot perform the operation.

    Attributes:
        capability: the name of the missing capability.
    """

    def __init__(self, capability: str, *, provider: str, message: str | None = None) -> None:
        self.capability = capability
        super().__init__(
            message or f"does not support {capability!r}; check Provider.capabilities first",
            provider=provider,
        )


class SyncCursorExpired(ProviderError):
    """The stored sync cursor is no longer valid; wipe the cache and resync in full."""

    default_hint = "Discard the cursor and run a full sync."


class NotificationRejected(ProviderError):
    """A push notification failed verification; answer 4xx and store nothing."""

    def __init__(self, message: str, *, provider: str, status: int = 401) -> None:
        super().__init__(message, provider=provider, status=status)


class ProviderResponseError(ProviderError):
    """The provider answered with something calbridge could not understand."""
