"""A row of resonate-pg's ``resonate.promises``, read by SQL, as the SDK hands a promise to its callers.

The gateway's index and the worker's watchdog read promises by SQL where the
Resonate protocol cannot list them (resonate-pg answers ``promise.search``
with 501); both decode a row the same way, here.
"""

from __future__ import annotations

from typing import Any

from resonate.codec import Codec, NoopEncryptor
from resonate.types import PromiseRecord, Value

#: The columns a row holds, in order: ``SELECT`` them so.
COLUMNS = "id, state, param_headers, param_data, value_headers, value_data, tags, timeout_at, created_at, settled_at"

_CODEC = Codec(NoopEncryptor())


def record_of_row(row: tuple[Any, ...]) -> PromiseRecord:
    """The promise a row of :data:`COLUMNS` holds, its data decoded."""
    pid, state, param_headers, param_data, value_headers, value_data, tags, timeout_at, created_at, settled_at = row
    raw = PromiseRecord(
        id=pid,
        state=state,
        param=Value(headers=param_headers or None, data=param_data),
        value=Value(headers=value_headers or None, data=value_data),
        tags=tags or {},
        timeout_at=timeout_at,
        created_at=created_at,
        settled_at=settled_at,
    )
    return _CODEC.decode_promise(raw)
