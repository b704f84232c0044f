"""Key rotation: re-encrypt every stored secret under the current key, in batches.

Each batch is its own short transaction and each row update is guarded by the key id it
was read with, so the job can be interrupted at any point and simply run again; rows a
concurrent writer re-encrypted meanwhile are skipped (they already use the current key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import attrs
import sqlalchemy as sa

from ..errors import DecryptionError
from . import schema as t
from ._base import Repository
from ._records import RotationReport
from ._tx import read, write
from .vault import ENV_KEYS, Vault, row_aad

__all__ = ["KeyRotation"]


@attrs.frozen
class _Spec:
    table: sa.Table
    keys: tuple[str, ...]  # primary key columns
    row_id: Callable[[Any], str]  # the row id bound into the AAD
    columns: tuple[str, ...]


_SPECS: Final = (
    _Spec(
        t.credentials, ("account_id",), lambda r: r.account_id, ("access_token", "refresh_token")
    ),
    _Spec(t.channels, ("provider", "id"), lambda r: r.id, ("secret",)),
    _Spec(t.oauth_states, ("state_hash",), lambda r: r.state_hash, ("code_verifier",)),
)


class KeyRotation(Repository):
    """``rotate_keys`` and ``count_unrotated`` for ``calbridge keys rotate``
    (``store.keys``): every sealed column of every table."""

    def _stale(self, spec: _Spec, current: str) -> sa.ColumnElement[bool]:
        kid = spec.table.c.key_id
        return sa.and_(kid.is_not(None), kid != current)

    def count_unrotated(self) -> int:
        """Rows holding a secret under a key other than the current one."""
        current = self.vault.current_key_id
        total = 0
        with read(self.engine) as conn:
            for spec in _SPECS:
                total += int(
                    conn.execute(
                        sa.select(sa.func.count())
                        .select_from(spec.table)
                        .where(self._stale(spec, current))
                    ).scalar_one()
                )
        return total

    def missing_key_ids(self) -> set[str]:
        """Key ids that stored secrets are under but the key ring does not hold."""
        known = set(self.vault.keys.key_ids)
        found: set[str] = set()
        with read(self.engine) as conn:
            for spec in _SPECS:
                kid = spec.table.c.key_id
                found.update(
                    str(k)
                    for k in conn.execute(
                        sa.select(kid).where(kid.is_not(None)).distinct()
                    ).scalars()
                )
        return found - known

    def rotate_keys(
        self, *, batch_size: int = 100, max_batches: int | None = None
    ) -> RotationReport:
        """Re-encrypt secrets under the current key, ``batch_size`` rows per transaction.

        ``max_batches`` stops early (the rest is left for the next run). Restartable.
        Raises :class:`~calbridge.errors.DecryptionError`, before re-encrypting anything,
        when rows are under a key the key ring lacks (an old key removed too early).
        """
        vault = self.vault
        current = vault.current_key_id
        missing = self.missing_key_ids()
        if missing:
            raise DecryptionError(
                f"secrets are stored under key(s) {', '.join(sorted(missing))}, which "
                f"{ENV_KEYS} lacks (configured: {', '.join(vault.keys.key_ids)}); add them "
                "back and run the rotation again: nothing was re-encrypted"
            )
        rotated = 0
        batches = 0
        for spec in _SPECS:
            while max_batches is None or batches < max_batches:
                done = self._rotate_batch(spec, vault, current, batch_size)
                batches += 1
                rotated += done
                if done < batch_size:
                    break
        return RotationReport(
            rotated=rotated, remaining=self.count_unrotated(), current_key_id=current
        )

    def _rotate_batch(self, spec: _Spec, vault: Vault, current: str, batch_size: int) -> int:
        table = spec.table
        done = 0
        with write(self.engine) as conn:
            rows = conn.execute(
                sa.select(table)
                .where(self._stale(spec, current))
                .order_by(*(table.c[k] for k in spec.keys))
                .limit(batch_size)
            ).all()
            for row in rows:
                values: dict[str, Any] = {"key_id": current}
                for column in spec.columns:
                    sealed = getattr(row, column)
                    if sealed is None:
                        continue
                    aad = row_aad(table.name, spec.row_id(row), row.provider, column)
                    values[column] = vault.encrypt(vault.decrypt(sealed, aad), aad)
                where = [table.c[k] == getattr(row, k) for k in spec.keys]
                result = conn.execute(
                    table.update().where(*where, table.c.key_id == row.key_id).values(values)
                )
                done += int(result.rowcount)
        return done
