"""A provider payload kept as its JSON bytes and decoded on first use.

Providers put the untouched provider payload in :attr:`calbridge.Event.raw` (nothing is lost
in translation). Most applications never look at it, so decoding every event's JSON into
dicts up front is wasted work on the read hot path. :class:`RawPayload` holds the event's
own JSON text (a copy of its slice of the page, so the page itself can be freed) and
decodes it the first time anything reads it; after that it is an ordinary read-only
mapping, equal to the dict it decodes to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from .errors import ProviderResponseError

__all__ = ["RawPayload"]

_decode = msgspec.json.Decoder().decode


class RawPayload(Mapping[str, Any]):
    """A JSON object's text, presented as a read-only mapping decoded lazily.

    Args:
        text: the JSON object's UTF-8 text (``bytes`` or a ``msgspec.Raw``).
        provider: the provider it came from, named in the error if it is not an object.

    A payload that turns out not to be a JSON object raises
    :class:`~calbridge.errors.ProviderResponseError` on first access.
    """

    __slots__ = ("_data", "_provider", "_text")

    def __init__(self, text: bytes | msgspec.Raw, provider: str = "") -> None:
        self._text = bytes(text)
        self._provider = provider
        self._data: dict[str, Any] | None = None

    @property
    def text(self) -> bytes:
        """The JSON text exactly as the provider sent it."""
        return self._text

    def _mapping(self) -> dict[str, Any]:
        data = self._data
        if data is None:
            try:
                value = _decode(self._text)
            except msgspec.DecodeError:
                value = None
            if not isinstance(value, dict):
                raise ProviderResponseError(
                    "a raw payload is not a JSON object", provider=self._provider or "unknown"
                )
            data = self._data = value
        return data

    def __getitem__(self, key: str) -> Any:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    def __contains__(self, key: object) -> bool:
        return key in self._mapping()

    def get(self, key: str, default: Any = None) -> Any:
        return self._mapping().get(key, default)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RawPayload):
            return self._text == other._text or self._mapping() == other._mapping()
        if isinstance(other, Mapping):
            return self._mapping() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a mapping: unhashable, like dict

    def __repr__(self) -> str:
        return f"RawPayload({len(self._text)} bytes)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (RawPayload, (self._text,), {"_provider": self._provider})

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self._provider = state.get("_provider", "")
