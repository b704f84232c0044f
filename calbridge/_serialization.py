"""calbridge's own cattrs converter (never cattrs' global one).

``make_converter()`` turns domain values into JSON-ready data and back. Secrets print as
``"***"`` in its default output; only the store builds a converter with
``reveal_secrets=True`` (and encrypts what it gets).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import cattrs
from cattrs.preconf.json import make_converter as _json_converter

from .models import Secret

__all__ = ["REDACTED", "make_converter"]

REDACTED = "***"


def make_converter(*, reveal_secrets: bool = False) -> cattrs.Converter:
    """A converter for calbridge's domain models.

    Args:
        reveal_secrets: write secrets' real text. For the storage layer only, which
            encrypts the result; everything else gets ``"***"``.
    """
    conv = _json_converter()

    if reveal_secrets:
        conv.register_unstructure_hook(Secret, lambda s: s.reveal())
    else:
        conv.register_unstructure_hook(Secret, lambda _s: REDACTED)
    conv.register_structure_hook(Secret, lambda v, _t: v if isinstance(v, Secret) else Secret(v))

    # naive datetimes (floating times) round-trip as ISO text without an offset
    conv.register_unstructure_hook(dt.datetime, lambda d: d.isoformat())
    conv.register_structure_hook(
        dt.datetime, lambda v, _t: v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(v)
    )

    def _date(v: Any, _t: Any) -> dt.date:
        if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
            return v
        return dt.date.fromisoformat(v)

    conv.register_structure_hook(dt.date, _date)
    return conv
