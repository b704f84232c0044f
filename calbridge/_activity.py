"""What happens because an app read or wrote through the bridge: observers of activity.

The bridge serves reads and writes; what else a read or a write sets off belongs to
whoever cares and is told through :class:`ActivityObserver`: the change pipeline re-syncs
a written calendar soon (providers do not always notify an app of its own writes), and
the migration replays a read against the target in ``shadow`` and verifies a write there
in ``dual`` (:class:`calbridge.migration.MigrationActivity`). Observers run on a store
thread (:func:`calbridge.store.offload`) after the provider answered; they enqueue work
and return, never calling a provider themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, Protocol

from .models import TimeRange

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["ActivityObserver", "Write", "WrittenCalendarSync"]

#: what a write did
Write = Literal["create", "update", "delete"]

#: seconds after an app's write before its calendar is synced (coalesced with others)
WRITE_SETTLE_SECONDS: Final = 30.0


class ActivityObserver(Protocol):
    """Told of every read and write the bridge served (on a store thread)."""

    def read(self, app_user_id: str, window: TimeRange) -> None:
        """``app_user_id``'s events in ``window`` were read."""

    def wrote(
        self, app_user_id: str, key: str, action: Write, account_id: str, calendar_id: str
    ) -> None:
        """The event of ``key`` was created, updated or deleted in that calendar."""


class WrittenCalendarSync:
    """Brings the cache up to date after a write: a (coalesced) sync of the written
    calendar :data:`WRITE_SETTLE_SECONDS` later."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def read(self, app_user_id: str, window: TimeRange) -> None:
        return None

    def wrote(
        self, app_user_id: str, key: str, action: Write, account_id: str, calendar_id: str
    ) -> None:
        from .sync import calendar_key

        self.runtime.queue.enqueue(
            "sync",
            {"account": account_id, "calendar": calendar_id},
            coalesce_key=calendar_key(account_id, calendar_id),
            run_at=self.runtime.clock() + WRITE_SETTLE_SECONDS,
        )
