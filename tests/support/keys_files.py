"""Writing the gateway's API keys file in a test, as an operator should: whole, then renamed into place."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline_api.auth.keys import KeyEntry


def write_keys(path: Path, *entries: KeyEntry) -> None:
    """Write the keys file whole and rename it into place, so a gateway re-reading it never sees half of it."""
    staged = path.with_suffix(".staged")
    staged.write_text("\n\n".join(entry.as_toml() for entry in entries) + "\n")
    os.replace(staged, path)
