"""An in-process gateway for tests: the real app over ASGI, the real workflow on Resonate's in-process server.

Databricks and the notifier are the doubles of :mod:`tests.support.pipeline_harness`;
every request carries the development key (AUTHENTICATED), which SETTINGS
(ENVIRONMENT=development, no keys file) accept, as the compose stack does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from pipeline_api.app import create_app
from pipeline_api.auth.keys import KeyEntry
from pipeline_api.settings import GatewaySettings
from pipeline_shared import promise_tree
from pipeline_shared.promise_tree import PipelineTree
from pipeline_shared.resonate_client import ResonateLink
from pipeline_shared.signing import derive_callback_key, sign_callback
from tests.support.pipeline_harness import CATALOGUE_FILE, SECRET, UNUSED_DATABASE_URL, Harness
from tests.support.stack_clients import AUTHENTICATED

SETTINGS = GatewaySettings(
    RESONATE_DATABASE_URL=UNUSED_DATABASE_URL,
    CALLBACK_SIGNING_SECRET=SECRET,
    JOB_CATALOGUE_FILE=CATALOGUE_FILE,
    DATABRICKS_NOTIFICATION_PASSWORD="unit-test-notification-password",
)


def first_callback_id(pipeline_id: str) -> str:
    """The callback promise of the first run of a pipeline the gateway started.

    The gateway starts every new pipeline as run by its code; a one-job
    pipeline's job is its step 1 (``P:1``), whose run reports on ``P:1.1``.
    """
    return promise_tree.callback_promise_id(promise_tree.step_base(pipeline_id, "1"))


class LocalSnapshots:
    """Every promise of a pipeline, from the in-process server's tables: what ``pipelines.promises_of`` reads."""

    def __init__(self, harness: Harness) -> None:
        self._harness = harness

    async def promises_of(self, pipeline_id: str) -> dict[str, Any]:
        read = {pid: await self._harness.promises_get(pid) for pid in self._harness.promise_ids(pipeline_id)}
        return {pid: record for pid, record in read.items() if record is not None}


class Gateway:
    def __init__(self, client: httpx.AsyncClient, harness: Harness) -> None:
        self.client = client
        self.harness = harness

    async def start(self, **body: Any) -> httpx.Response:
        payload = {"id": f"p-{uuid.uuid4().hex[:12]}", "email": "user@example.com", "parameters": {}} | body
        return await self.client.post("/pipelines", json=payload)

    async def wait_for_state(self, pipeline_id: str, *states: str) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while True:
                doc = (await self.client.get(f"/pipelines/{pipeline_id}")).json()
                if doc["state"] in states:
                    return doc
                await asyncio.sleep(0.02)

    async def run_base(self, pipeline_id: str) -> str:
        """Where the pipeline's (first) run hangs: the pipeline itself, or its first step if it is run by its code."""
        root = await self.harness.promises_get(pipeline_id)
        composed = root is not None and PipelineTree(root, {}).composed
        return promise_tree.step_base(pipeline_id, "1") if composed else pipeline_id

    async def callback(
        self,
        pipeline_id: str,
        body: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        at: datetime | None = None,
        raw: bytes | None = None,
    ) -> httpx.Response:
        promise_id = promise_tree.callback_promise_id(await self.run_base(pipeline_id))
        document = {"promise_id": promise_id, "status": "success", "result": {"rows": 3}} | (body or {})
        content = raw if raw is not None else json.dumps(document).encode()
        headers = sign_callback(key or derive_callback_key(SECRET, promise_id), content, at=at)
        return await self.client.post(
            "/callbacks/databricks", content=content, headers=headers | {"content-type": "application/json"}
        )


# What every request of these tests carries (AUTHENTICATED): the development
# key, which SETTINGS (ENVIRONMENT=development, no keys file) accept, as the
# compose stack does. Authentication itself is tested in tests/api/auth/test_authenticator.py.


@contextlib.asynccontextmanager
async def serve(settings: GatewaySettings = SETTINGS) -> AsyncIterator[Gateway]:
    """A gateway with ``settings`` on a fresh in-process pipeline, whose worker signs with SECRET."""
    harness = Harness(autostart=False)
    app = in_process_app(settings, harness)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=AUTHENTICATED) as client:
            yield Gateway(client, harness)


def keyed_app(keys_file: Path, entry: KeyEntry) -> tuple[Harness, Any]:
    """A gateway app that takes only ``entry``'s key (written to ``keys_file``), on a fresh in-process pipeline."""
    keys_file.write_text(entry.as_toml())
    settings = SETTINGS.model_copy(
        update={"ENVIRONMENT": "test", "API_KEYS_FILE": keys_file, "RECIPIENT_DOMAINS": ("*",)}
    )
    harness = Harness(autostart=False)
    return harness, in_process_app(settings, harness)


def in_process_app(settings: GatewaySettings, harness: Harness, **seams: Any) -> Any:
    """The gateway app on ``harness``'s in-process server, reading a pipeline's promises from its tables."""
    link = ResonateLink(harness.resonate, None)
    return create_app(settings, connect_resonate=lambda _: link, snapshots=LocalSnapshots(harness), **seams)
