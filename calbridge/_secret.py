"""The :class:`Secret` value (re-exported by :mod:`calbridge.models` and :mod:`calbridge`)."""

from __future__ import annotations

import hmac
from typing import NoReturn

__all__ = ["Secret"]


class Secret:
    """A secret string (token, client secret, channel secret) that never prints itself.

    ``repr``, ``str`` and ``format`` show ``***``; pickling is refused; equality is a
    constant-time comparison. Code that must send the value (an ``Authorization`` header,
    a signature check) calls :meth:`reveal`; the store encrypts it before it is written.

    >>> s = Secret("canary")
    >>> s
    Secret('***')
    >>> s.reveal()
    'canary'
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the secret's text. Call only at the point of use; never log it."""
        return self._value

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("calbridge.Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled; store it through the token vault")


def _opt_secret(value: str | Secret | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value)


def _secret(value: str | Secret) -> Secret:
    return value if isinstance(value, Secret) else Secret(value)
