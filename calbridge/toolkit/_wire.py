"""Wire models: a provider's JSON as msgspec structs, read and written by one set of functions.

A provider describes each JSON object of its API once, as a :class:`WireStruct`, and uses
that one class to read answers and to write request bodies::

    class Calendar(WireStruct, frozen=True, rename="camel"):
        id: str
        summary_override: str | None = None  # "summaryOverride"

    class Channel(WireStruct, frozen=True, rename="camel"):
        id: str
        client_state: calbridge.Secret | None = None  # a Secret from the moment it is read

    cal = decode_wire(response.content, Calendar, provider="example", what="calendar")
    body = wire_dict(Calendar(id="c1"))  # {"id": "c1"}: None and default fields left out
    body = wire_dict(Channel(id="ch", client_state=secret), reveal_secrets=True)

* :func:`decode_wire` reads JSON text (``bytes``, ``str``, :class:`msgspec.Raw`) with a
  decoder cached per type, or already-decoded JSON (a dict) with :func:`msgspec.convert`;
  unreadable input raises :class:`calbridge.errors.ProviderResponseError` naming the
  provider and what was read. Unknown keys are ignored (providers add fields).
* :func:`wire_dict` / :func:`encode_wire` write a struct as a JSON-ready dict or as JSON
  bytes, leaving out fields equal to their default (``None`` ones included).
* :class:`calbridge.Secret` fields are read as ``Secret`` and never print. Writing one
  is refused unless the caller passes ``reveal_secrets=True``: a secret goes into a
  request body only deliberately.

Field names are Python's; give JSON names with ``rename="camel"`` on the class or
``msgspec.field(name=...)`` on a field. Structs are frozen: say ``frozen=True`` on each
one too (msgspec inherits it, type checkers do not). Add ``gc=False`` to those that hold
no lists or dicts (the hot path's many small objects).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from ..errors import ProviderResponseError
from ..models import Secret

__all__ = ["WireStruct", "decode_wire", "encode_wire", "wire_dict"]

T = TypeVar("T")


class WireStruct(msgspec.Struct, frozen=True, omit_defaults=True):
    """Base class of a provider's wire models: frozen (hashable), default fields omitted
    on output, unknown keys ignored on input."""


def _dec_hook(cls: type, value: Any) -> Any:
    if cls is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
        # never the value itself: it may be a secret sent in the wrong shape
        raise TypeError(f"expected a string, got {type(value).__name__}")
    raise NotImplementedError(f"wire models cannot hold {cls.__name__}")


def _reveal(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.reveal()
    raise NotImplementedError(f"wire models cannot hold {type(value).__name__}")


def _refuse(value: Any) -> Any:
    if isinstance(value, Secret):
        raise TypeError(
            "a wire value holds a calbridge.Secret; pass reveal_secrets=True to send its text"
        )
    raise NotImplementedError(f"wire models cannot hold {type(value).__name__}")


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
_TEXT = (bytes, bytearray, memoryview, str, msgspec.Raw)


def _decoder(cls: Any) -> msgspec.json.Decoder[Any]:
    found = _decoders.get(cls)
    if found is None:
        found = _decoders[cls] = msgspec.json.Decoder(cls, dec_hook=_dec_hook)
    return found


def decode_wire(data: Any, cls: type[T], *, provider: str, what: str | None = None) -> T:
    """``data`` as a ``cls``: JSON text (``bytes``, ``str``, :class:`msgspec.Raw`) or
    already-decoded JSON (a dict, a list).

    Raises :class:`~calbridge.errors.ProviderResponseError` (naming ``provider`` and
    ``what``, by default the class's name) for malformed JSON or a value of the wrong
    shape. The message says where (``$.items[3].start``), never a value read.
    """
    try:
        if isinstance(data, _TEXT):
            decoder = _decoders.get(cls)
            if decoder is None:
                decoder = _decoder(cls)
            result: T = decoder.decode(data)
            return result
        return msgspec.convert(data, cls, dec_hook=_dec_hook)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ProviderResponseError(
            f"unreadable {what or getattr(cls, '__name__', 'value')}: {exc}",
            provider=provider,
        ) from None


def wire_dict(value: msgspec.Struct, *, reveal_secrets: bool = False) -> dict[str, Any]:
    """``value`` as a JSON-ready dict (JSON names, default fields left out; tuples stay
    tuples, which JSON encoders write as arrays).

    A :class:`calbridge.Secret` is written as its text only with ``reveal_secrets=True``;
    otherwise it raises ``TypeError``.
    """
    out: dict[str, Any] = msgspec.to_builtins(
        value, enc_hook=_reveal if reveal_secrets else _refuse
    )
    return out


def encode_wire(value: msgspec.Struct, *, reveal_secrets: bool = False) -> bytes:
    """``value`` as JSON bytes, as :func:`wire_dict` writes it."""
    return msgspec.json.encode(value, enc_hook=_reveal if reveal_secrets else _refuse)
