"""Typed migration guards, what ``force`` may skip, and the target's initial-sync state.

A guard that refuses a step is a :class:`Guard`: a :class:`GuardKind` (what decisions and
``--force`` look at) and a message (what people read). Nothing decides on the message.

The initial-sync state of a target account lives in the account's ``details``:

* ``initial_sync_required`` (bool): the provider is (True) or is not (False) still
  running its first sync of the user's calendars;
* ``initial_sync_source``: ``"userinfo"`` (a read of the provider's account info, e.g.
  Cronofy's ``GET /v1/userinfo`` ``profile_initial_sync_required``) or
  ``"notification"`` (Cronofy's ``profile_initial_sync_completed`` push notification);
* ``initial_sync_at``: when that was observed (epoch seconds). An observation older than
  the stored one is not written, so a slow read cannot undo a newer notification.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import attrs

from ..provider import Session

if TYPE_CHECKING:
    from ..store import Connection, Store

__all__ = [
    "BARE_FORCE",
    "FORCEABLE",
    "Guard",
    "GuardKind",
    "InitialSyncReporter",
    "force_set",
    "record_initial_sync",
]


class GuardKind(enum.StrEnum):
    """Why a migration step is refused (the values are the CLI's ``--force`` names)."""

    #: the user holds no account at a legacy (non-target) provider
    NO_LEGACY_ACCOUNT = "no-legacy-account"
    #: the user has not authorised the target provider
    NO_AUTHORIZATION = "no-authorization"
    #: the target authorization exists but does not work (needs re-authorization, revoked)
    AUTHORIZATION_INACTIVE = "authorization-inactive"
    #: the step would skip a phase
    SKIPS_PHASE = "skips-phase"
    #: the step goes backwards (use rollback)
    BACKWARDS = "backwards"
    #: the target provider has not finished its first sync of the user's calendars
    INITIAL_SYNC = "initial-sync"
    #: parity has not been clean for the clean period
    PARITY = "parity"


#: the guards ``force`` may skip; every other guard always holds
FORCEABLE: Final = frozenset({GuardKind.PARITY, GuardKind.INITIAL_SYNC})
#: what a bare ``--force`` (or ``force=True``) skips: every forceable guard
BARE_FORCE: Final = FORCEABLE


@attrs.frozen
class Guard:
    """One refusing guard: its kind and a message for people."""

    kind: GuardKind
    message: str

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"kind": str(self.kind), "message": self.message}


def force_set(force: bool | Iterable[GuardKind | str] | None) -> frozenset[GuardKind]:
    """The guard kinds ``force`` names: True means :data:`BARE_FORCE`, False/None none.

    Raises ValueError for an unknown kind or one that cannot be forced.
    """
    if force is None or force is False:
        return frozenset()
    if force is True:
        return BARE_FORCE
    kinds = frozenset(GuardKind(k) for k in force)
    refused = kinds - FORCEABLE
    if refused:
        names = ", ".join(sorted(str(k) for k in refused))
        allowed = ", ".join(sorted(str(k) for k in FORCEABLE))
        raise ValueError(f"cannot force {names}: only {allowed} can be forced")
    return kinds


@runtime_checkable
class InitialSyncReporter(Protocol):
    """A provider that can say whether its first sync of an account is still running."""

    async def initial_sync_required(self, session: Session) -> bool | None:
        """True while the provider is still syncing; None when it does not say."""
        ...


def initial_sync_required(details: Mapping[str, Any]) -> bool | None:
    """The stored state: True (syncing), False (done) or None (never observed)."""
    value = details.get("initial_sync_required")
    return value if isinstance(value, bool) else None


def record_initial_sync(
    store: Store,
    account_id: str,
    *,
    required: bool,
    source: str,
    at: float,
    conn: Connection | None = None,
) -> bool:
    """Store an observation of the account's initial sync in its details (in ``conn``'s
    write transaction, if given); False when the account is gone or a newer observation
    is stored.
    """

    def observe(details: dict[str, Any]) -> dict[str, Any] | None:
        stored_at = details.get("initial_sync_at")
        if isinstance(stored_at, int | float) and stored_at > at:
            return None
        details.update(
            {
                "initial_sync_required": required,
                "initial_sync_source": source,
                "initial_sync_at": at,
            }
        )
        return details

    return store.accounts.update_details(account_id, observe, conn=conn)
