"""``python -m databricks_emulator``: serve on DATABRICKS_EMULATOR_HOST:DATABRICKS_EMULATOR_PORT."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from pydantic import ValidationError

from databricks_emulator.app import create_app, workspace_bundle
from databricks_emulator.bundle import BundleError
from databricks_emulator.settings import Settings


def main(wrap: Callable[[Any], Any] | None = None) -> int:
    """Serve the emulator; ``wrap`` (an ASGI middleware) lets the test suite inspect every answer."""
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"databricks-emulator: bad configuration:\n{exc}", file=sys.stderr)
        return 2
    try:
        bundle = workspace_bundle(settings)
    except BundleError as exc:
        print(f"databricks-emulator: cannot serve the bundle (DATABRICKS_EMULATOR_BUNDLE): {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings, bundle)
    uvicorn.run(
        wrap(app) if wrap is not None else app,
        host=settings.HOST,
        port=settings.PORT,
        log_level="warning",
        # Hundreds of pipelines poll at once: keep their connections open between polls.
        timeout_keep_alive=30,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
