"""The sync cursor: Graph's deltaLink plus what is needed to filter delta noise.

Graph's ``calendarView/delta`` reports as ``@removed: deleted`` both events deleted inside
the window and events *outside* the window that were added, changed or deleted. To tell
them apart without a store, the cursor carries the window and a 48-bit hash of the id of
every event the caller was told about inside the window; an ``@removed`` for an id never
reported is noise and dropped (a hash collision only lets one harmless deletion through).

Format: ``o1.`` + urlsafe base64 of zlib-compressed JSON ``{"link", "start", "end", "ids"}``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import zlib

import attrs

from calbridge import TimeRange
from calbridge.errors import SyncCursorExpired

__all__ = ["Cursor", "id_hash"]

_PREFIX = "o1."
_HASH_BYTES = 6


def id_hash(event_id: str) -> bytes:
    """The short hash of an event id kept in the cursor."""
    return hashlib.blake2b(event_id.encode("utf-8"), digest_size=_HASH_BYTES).digest()


@attrs.define
class Cursor:
    """A decoded cursor (mutable while a round runs)."""

    link: str
    window: TimeRange
    known: set[bytes] = attrs.field(factory=set)

    def encode(self) -> str:
        """The cursor string handed to the caller."""
        ids = b"".join(sorted(self.known))
        doc = {
            "link": self.link,
            "start": self.window.start.isoformat(),
            "end": self.window.end.isoformat(),
            "ids": base64.b64encode(ids).decode("ascii"),
        }
        packed = zlib.compress(json.dumps(doc, separators=(",", ":")).encode("utf-8"), 9)
        return _PREFIX + base64.urlsafe_b64encode(packed).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Read a cursor; anything unreadable is an expired cursor (full resync)."""
        if not text.startswith(_PREFIX):
            raise SyncCursorExpired("the cursor is not an outlook cursor", provider="outlook")
        try:
            doc = json.loads(zlib.decompress(base64.urlsafe_b64decode(text[len(_PREFIX) :])))
            ids = base64.b64decode(doc["ids"])
            window = TimeRange(
                start=dt.datetime.fromisoformat(doc["start"]),
                end=dt.datetime.fromisoformat(doc["end"]),
            )
            link = str(doc["link"])
        except (ValueError, KeyError, TypeError, zlib.error):
            raise SyncCursorExpired("the cursor is unreadable", provider="outlook") from None
        known = {ids[i : i + _HASH_BYTES] for i in range(0, len(ids), _HASH_BYTES)}
        return cls(link=link, window=window, known=known)
