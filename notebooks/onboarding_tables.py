"""Where the onboarding jobs keep the customer table ingest writes and the next two jobs read.

Ingest writes its cleaned copy of an upload to a Unity Catalog volume,
``/Volumes/main/onboarding/ingested/``, in a file named after its content's
SHA-256 (``customers-<16 hex>.csv``). A name from the content makes the write
idempotent: a retried or repaired ingest writes the same bytes to the same
name, and two uploads never share one. It is written whole to a temporary name
and then renamed, so a reader never sees half a table.

The next jobs take that path as their ``table`` parameter. Anyone holding a
Jobs API token can start them with another value, so they accept only a path of
exactly that form (checked before anything is opened: no other folder, no
``..``, no link out of the folder by name) whose content still hashes to its
name. The catalogue refuses any other value with the same pattern
(``TABLE_PATTERN``; a test holds the two equal).

On Databricks a volume is a folder on the driver at ``/Volumes/...``. A driver
whose volumes live elsewhere (the Databricks emulator runs notebooks on its own
host) names that folder in the ``PIPELINE_VOLUMES_ROOT`` environment variable:
the cluster's configuration, out of a job parameter's reach.

Standard library only, as every module the notebooks import.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

#: The volume folder ingest writes to (create the volume main.onboarding.ingested once).
TABLE_FOLDER = "/Volumes/main/onboarding/ingested/"
#: Every ``table`` value the next jobs accept; the catalogue's rule for ``table`` is this pattern.
TABLE_PATTERN = r"^/Volumes/main/onboarding/ingested/customers-[0-9a-f]{16}\.csv$"
#: Where volumes are on Databricks' drivers.
VOLUMES = "/Volumes/"
#: The driver's environment variable naming the folder that stands for /Volumes/.
VOLUMES_ROOT_VARIABLE = "PIPELINE_VOLUMES_ROOT"
#: A table larger than this is refused rather than read into the driver's memory.
MAX_TABLE_BYTES = 50 * 1024 * 1024


class TableRefused(ValueError):
    """The ``table`` is not one ingest could have written; nothing was read."""


def content_name(data: bytes) -> str:
    """The table's path for its content: the folder, and the first 16 hex digits of its SHA-256."""
    return f"{TABLE_FOLDER}customers-{hashlib.sha256(data).hexdigest()[:16]}.csv"


def local_path(volume_path: str, environ: dict[str, str] | None = None) -> Path:
    """Where ``volume_path`` (under /Volumes/) is on this driver."""
    environ = os.environ if environ is None else environ
    root = environ.get(VOLUMES_ROOT_VARIABLE)
    if not root:
        return Path(volume_path)
    return Path(root) / volume_path[len(VOLUMES) :]


def write_table(text: str) -> str:
    """Write the cleaned table (UTF-8) where the next jobs read it; its volume path."""
    data = text.encode("utf-8")
    table = content_name(data)
    target = local_path(table)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".ingest-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return table


def checked_table(table: str) -> str:
    """``table`` if it has the form ingest writes; TableRefused naming it otherwise."""
    if not isinstance(table, str) or not re.fullmatch(TABLE_PATTERN, table):
        raise TableRefused(
            f"table {table!r} is not one ingest wrote: expected {TABLE_FOLDER}customers-<16 hex digits>.csv"
        )
    return table


def read_table(table: str) -> str:
    """The text of the table ingest wrote at ``table``; TableRefused if the path or its content is not ingest's."""
    path = local_path(checked_table(table))
    with open(path, "rb") as stream:
        data = stream.read(MAX_TABLE_BYTES + 1)
    if len(data) > MAX_TABLE_BYTES:
        raise TableRefused(f"table {table} is larger than {MAX_TABLE_BYTES} bytes")
    if content_name(data) != table:
        raise TableRefused(f"table {table} was changed after ingest wrote it: its content no longer matches its name")
    return data.decode("utf-8")
