"""The token vault: AES-256-GCM with per-row associated data and key ids.

Every ciphertext is text of the form ``cb1.<kid>.<base64url(nonce || ciphertext+tag)>``;
the associated data binds it to its row, so a value copied to another row (or column)
does not decrypt. Keys come from configuration or the environment, never from the
database::

    CALBRIDGE_KEYS="k2026b:<base64 32 bytes>,k2026a:<base64 32 bytes>"

The first key encrypts; all of them decrypt (rotation: add a new key first, run
``calbridge keys rotate``, then drop the old key). A missing or wrong key raises
:class:`~calbridge.errors.ConfigurationError` / :class:`~calbridge.errors.DecryptionError`;
there is no plaintext fallback.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Final

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from calbridge.errors import ConfigurationError, DecryptionError
from calbridge.models import Secret

__all__ = [
    "ENV_KEYS",
    "KeyRing",
    "Vault",
    "check_key_id",
    "generate_key",
    "new_key_id",
    "row_aad",
]

#: environment variable holding ``kid:base64key`` pairs, current key first
ENV_KEYS: Final = "CALBRIDGE_KEYS"
_PREFIX: Final = "cb1"
_NONCE_BYTES: Final = 12
_KID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def generate_key() -> str:
    """A new random 256-bit key, base64-encoded (for ``CALBRIDGE_KEYS``)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def new_key_id(today: dt.date | None = None) -> str:
    """A fresh key id, ``k<YYYYMMDD>-<8 random hex digits>``: dated for the operator,
    random so that two keys made on one day never share an id."""
    day = today or dt.datetime.now(dt.UTC).date()
    return f"k{day:%Y%m%d}-{secrets.token_hex(4)}"


def check_key_id(kid: str) -> str:
    """``kid`` when it is a valid key id (letters, digits, '-', '_'; at most 32)."""
    if not _KID_RE.match(kid):
        raise ConfigurationError(
            f"invalid key id {kid!r}: use letters, digits, '-' or '_' (at most 32)"
        )
    return kid


def row_aad(table: str, row_id: str, provider: str, column: str) -> bytes:
    """The associated data binding a ciphertext to one column of one row."""
    for part in (table, row_id, provider, column):
        if "|" in part:
            raise ValueError("associated-data parts must not contain '|'")
    return f"calbridge|{table}|{row_id}|{provider}|{column}".encode()


@attrs.frozen(repr=False)
class KeyRing:
    """Named AES-256 keys; ``current`` encrypts, every key decrypts."""

    current: str
    _keys: Mapping[str, bytes] = attrs.field(alias="keys")

    def __attrs_post_init__(self) -> None:
        if self.current not in self._keys:
            raise ConfigurationError(f"the current key id {self.current!r} has no key")

    def __repr__(self) -> str:
        return f"KeyRing(current={self.current!r}, key_ids={list(self._keys)!r})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Configured key ids, current first."""
        return (self.current, *(k for k in self._keys if k != self.current))

    def key(self, kid: str) -> bytes | None:
        """The key bytes for ``kid``, or None when it is not configured."""
        return self._keys.get(kid)

    def only_current(self) -> KeyRing:
        """A ring with the current key alone (to check a rotation finished)."""
        return KeyRing(current=self.current, keys={self.current: self._keys[self.current]})

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        """Parse ``"kid1:base64key,kid2:base64key"`` (first = current).

        Raises:
            ConfigurationError: empty spec, bad key id, bad base64, key not 32 bytes,
                duplicate key id. Messages never contain key material.
        """
        items = [p.strip() for p in spec.split(",") if p.strip()]
        if not items:
            raise ConfigurationError(
                f"no encryption keys configured: set {ENV_KEYS}='kid:base64key' "
                "(generate one with `calbridge keys generate`)"
            )
        keys: dict[str, bytes] = {}
        for item in items:
            kid, sep, b64 = item.partition(":")
            kid = kid.strip()
            if not sep or not _KID_RE.match(kid):
                raise ConfigurationError(
                    f"{ENV_KEYS}: each entry is 'kid:base64key' with a key id of letters, "
                    "digits, '-' or '_' (at most 32)"
                )
            try:
                raw = base64.b64decode(b64.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigurationError(f"{ENV_KEYS}: key {kid!r} is not valid base64") from None
            if len(raw) != 32:
                raise ConfigurationError(
                    f"{ENV_KEYS}: key {kid!r} must be 32 bytes (AES-256), got {len(raw)}"
                )
            if kid in keys:
                raise ConfigurationError(f"{ENV_KEYS}: key id {kid!r} appears twice")
            keys[kid] = raw
        return cls(current=next(iter(keys)), keys=keys)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyRing:
        """The key ring from ``$CALBRIDGE_KEYS`` (fails closed when unset)."""
        env = os.environ if environ is None else environ
        return cls.parse(env.get(ENV_KEYS, ""))

    @classmethod
    def of(cls, pairs: Sequence[tuple[str, bytes | str]]) -> KeyRing:
        """A ring from ``(kid, key)`` pairs (raw 32 bytes or base64 text), current first."""
        spec = ",".join(
            f"{kid}:{base64.b64encode(k).decode() if isinstance(k, bytes) else k}"
            for kid, k in pairs
        )
        return cls.parse(spec)


@attrs.frozen(repr=False)
class Vault:
    """Encrypts and decrypts secrets bound to their rows."""

    keys: KeyRing

    def __repr__(self) -> str:
        return f"Vault({self.keys!r})"

    @property
    def current_key_id(self) -> str:
        """The key id new ciphertexts use."""
        return self.keys.current

    def encrypt(self, value: Secret | str, aad: bytes) -> str:
        """Encrypt ``value`` with the current key, bound to ``aad`` (see :func:`row_aad`)."""
        text = value.reveal() if isinstance(value, Secret) else value
        kid = self.keys.current
        key = self.keys.key(kid)
        assert key is not None
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, text.encode("utf-8"), _bind(kid, aad))
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"{_PREFIX}.{kid}.{body}"

    def decrypt(self, ciphertext: str, aad: bytes) -> Secret:
        """Decrypt a vault ciphertext for the row ``aad`` names.

        Raises:
            DecryptionError: not a vault ciphertext, its key is not configured, the key is
                wrong, or the value belongs to another row or column.
        """
        kid = key_id_of(ciphertext)
        key = self.keys.key(kid)
        if key is None:
            raise DecryptionError(
                f"the value was encrypted with key {kid!r}, which is not configured; "
                f"add it to {ENV_KEYS} (configured: {', '.join(self.keys.key_ids)})"
            )
        body = ciphertext.split(".", 2)[2]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise DecryptionError("the stored value is not a valid vault ciphertext") from None
        if len(raw) < _NONCE_BYTES + 16:
            raise DecryptionError("the stored value is not a valid vault ciphertext")
        try:
            plain = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _bind(kid, aad))
        except InvalidTag:
            raise DecryptionError(
                f"the value did not decrypt with key {kid!r}: the key is wrong or the value "
                "was copied from another row"
            ) from None
        return Secret(plain.decode("utf-8"))

    def needs_rotation(self, ciphertext: str) -> bool:
        """True when ``ciphertext`` is not under the current key."""
        return key_id_of(ciphertext) != self.keys.current

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Vault:
        """A vault over ``$CALBRIDGE_KEYS``."""
        return cls(KeyRing.from_env(environ))


def key_id_of(ciphertext: str) -> str:
    """The key id inside a vault ciphertext (DecryptionError when it is not one)."""
    parts = ciphertext.split(".", 2) if isinstance(ciphertext, str) else []
    if len(parts) != 3 or parts[0] != _PREFIX or not _KID_RE.match(parts[1]):
        raise DecryptionError(
            "the stored value is not a vault ciphertext (plaintext is never accepted)"
        )
    return parts[1]


def _bind(kid: str, aad: bytes) -> bytes:
    return f"{_PREFIX}|{kid}|".encode() + aad
