"""The gateway's OpenAPI document is held to a snapshot taken before the routes moved into rooms.

Moving a route between modules must not change what a client sees: its
path, method, operation id, parameters, bodies, responses and schemas. Only
a route's tags may change (grouping is presentation), so they are left out
of the comparison. The web page is a mounted app outside the document; its
routes (path and methods) are held to the snapshot too.

To take a new snapshot after a deliberate change of the API, run with
``UPDATE_OPENAPI_SNAPSHOT=1`` and review the diff of the snapshot file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from starlette.routing import Mount

from pipeline_api.app import create_app
from pipeline_api.settings import GatewaySettings
from tests.support.pipeline_harness import CATALOGUE_FILE, SECRET, UNUSED_DATABASE_URL

SETTINGS = GatewaySettings(
    RESONATE_DATABASE_URL=UNUSED_DATABASE_URL,
    CALLBACK_SIGNING_SECRET=SECRET,
    JOB_CATALOGUE_FILE=CATALOGUE_FILE,
    DATABRICKS_NOTIFICATION_PASSWORD="unit-test-notification-password",
)
SNAPSHOT = Path(__file__).parent / "snapshots" / "openapi.json"


def without_tags(document: dict[str, Any]) -> dict[str, Any]:
    untagged = json.loads(json.dumps(document))
    untagged.pop("tags", None)
    for operations in untagged.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.pop("tags", None)
    return untagged


def ui_routes() -> list[list[Any]]:
    app = create_app(SETTINGS)
    (ui,) = [route.app for route in app.routes if isinstance(route, Mount) and route.path == "/ui"]
    return sorted(
        [route.path, sorted(getattr(route, "methods", None) or [])] for route in ui.routes if hasattr(route, "path")
    )


def current() -> dict[str, Any]:
    return {"openapi": without_tags(create_app(SETTINGS).openapi()), "ui_routes": ui_routes()}


def test_the_openapi_document_is_the_snapshot_but_for_tags() -> None:
    document = current()
    if os.environ.get("UPDATE_OPENAPI_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert document["openapi"]["paths"].keys() == expected["openapi"]["paths"].keys()
    for path, operations in expected["openapi"]["paths"].items():
        assert document["openapi"]["paths"][path] == operations, path
    assert document["openapi"] == expected["openapi"]
    assert document["ui_routes"] == expected["ui_routes"]
