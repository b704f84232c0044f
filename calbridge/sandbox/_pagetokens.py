"""The page-token store every provider sandbox pages its lists with.

A list that does not fit one page answers an opaque token (Cronofy's
``/v1/events/pages/{token}``, Google's ``pageToken``, Graph's ``$skiptoken``) standing
for what the next page needs: the snapshot the first page was cut from and where the
next page starts. :class:`PageTokens` keeps those values server-side, so a token is only
as good as the sandbox says: it expires (``ttl``, or an explicit expiry), the oldest go
first beyond ``capacity``, and an unknown, evicted or expired token reads as None, which
each sandbox answers in its provider's words (404, 400 ``invalid``, 410).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PageTokens"]

T = TypeVar("T")


def _hex_token() -> str:
    return secrets.token_hex(8)


class PageTokens(Generic[T]):
    """Opaque tokens -> the value each stands for (thread-safe).

    Args:
        now: seconds (the sandbox clock's ``timestamp``, usually).
        ttl: seconds a token lives from issue (None: until evicted).
        capacity: tokens kept at most; the oldest issued go first.
        token: how a token looks (default: 16 hex digits).
    """

    def __init__(
        self,
        now: Callable[[], float],
        *,
        ttl: float | None = None,
        capacity: int = 20_000,
        token: Callable[[], str] = _hex_token,
    ) -> None:
        self._now = now
        self.ttl = ttl
        self.capacity = capacity
        self._token = token
        self._lock = threading.Lock()
        #: token -> (value, expiry or None), in issue order
        self._entries: OrderedDict[str, tuple[T, float | None]] = OrderedDict()

    def issue(self, value: T, *, expires: float | None = None) -> str:
        """A new token for ``value``, valid until ``expires`` (default: now + ``ttl``)."""
        now = self._now()
        if expires is None and self.ttl is not None:
            expires = now + self.ttl
        token = self._token()
        with self._lock:
            self._entries[token] = (value, expires)
            while self._entries and (
                len(self._entries) > self.capacity or self._expired(next(iter(self._entries)), now)
            ):
                self._entries.popitem(last=False)
        return token

    def _expired(self, token: str, now: float) -> bool:
        expires = self._entries[token][1]
        return expires is not None and expires < now

    def get(self, token: str) -> T | None:
        """The value of a live token; None when unknown, evicted or expired."""
        now = self._now()
        with self._lock:
            entry = self._entries.get(token)
        if entry is None or (entry[1] is not None and entry[1] < now):
            return None
        return entry[0]

    def discard(self, token: str) -> None:
        """Forget one token."""
        with self._lock:
            self._entries.pop(token, None)

    def clear(self) -> None:
        """Forget every token (every outstanding page link then fails)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
