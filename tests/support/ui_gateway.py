"""The gateway's web page in process, as a browser without JavaScript meets it.

A cookie jar, the forms' tokens, and three principals' keys.

The gateway runs as a deployment (API keys from a keys file, a real
UI_SESSION_SECRET) on the in-process pipeline of tests.support.pipeline_harness.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from pipeline_api.auth.keys import mint
from pipeline_api.auth.principals import Scope
from pipeline_api.settings import GatewaySettings
from tests.support.gateway_app import in_process_app
from tests.support.pipeline_harness import CATALOGUE_FILE, SECRET, UI_SECRET, UNUSED_DATABASE_URL, Harness

ALICE_KEY, ALICE = mint("alice", frozenset({Scope.START, Scope.READ, Scope.CANCEL}), key_id="alice")
BOB_KEY, BOB = mint("bob", frozenset({Scope.START, Scope.READ, Scope.CANCEL}), key_id="bob")
READER_KEY, READER = mint("reader", frozenset({Scope.READ}), key_id="reader")

CSV_RESULT = {
    "source": "built-in sample",
    "row_count": 3,
    "column_count": 2,
    "columns": [
        {"name": "city", "type": "string", "count": 3, "missing": 0, "distinct": 3},
        {
            "name": "temp",
            "type": "number",
            "count": 3,
            "missing": 0,
            "distinct": 2,
            "min": 1.5,
            "max": 9.0,
            "mean": 4.0,
        },
    ],
}


class Page:
    """A browser's view of the gateway: one cookie jar, the page's CSRF token read from what it was shown."""

    def __init__(self, client: httpx.AsyncClient, harness: Harness, keys_file: Path, app: FastAPI) -> None:
        self.client = client
        self.harness = harness
        self.keys_file = keys_file
        #: The gateway's app, for a test that stands something in for a part of its state.
        self.app = app
        self.csrf = ""

    async def sign_in(self, credential: str = ALICE_KEY, **extra: str) -> httpx.Response:
        form = await self.client.get("/ui/sign-in")
        token = hidden(form.text, "sign_in_token")
        response = await self.client.post(
            "/ui/sign-in", data={"credential": credential, "sign_in_token": token, "next": "/ui/"} | extra
        )
        if response.status_code == 303:
            self.csrf = hidden((await self.client.get("/ui/")).text, "csrf_token")
        return response

    async def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return await self.client.post(path, data={"csrf_token": self.csrf} | (data or {}), **kwargs)

    async def start(self, **fields: str) -> str:
        pipeline_id = fields.pop("id", f"ui-{uuid.uuid4().hex[:10]}")
        response = await self.post("/ui/start", {"id": pipeline_id, "email": "me@example.com"} | fields)
        assert response.status_code == 303, response.text
        assert response.headers["location"] == f"/ui/pipelines/{pipeline_id}"
        return pipeline_id


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden {name} in the page"
    return match.group(1)


def settings_for(keys_file: Path, **overrides: Any) -> GatewaySettings:
    return GatewaySettings(
        **{
            "ENVIRONMENT": "test",
            "RECIPIENT_DOMAINS": "*",
            "RESONATE_DATABASE_URL": UNUSED_DATABASE_URL,
            "CALLBACK_SIGNING_SECRET": SECRET,
            "UI_SESSION_SECRET": UI_SECRET,
            "JOB_CATALOGUE_FILE": CATALOGUE_FILE,
            "API_KEYS_FILE": keys_file,
        }
        | overrides
    )


@contextlib.asynccontextmanager
async def serve(keys_file: Path, base_url: str = "http://gateway", **overrides: Any) -> AsyncIterator[Page]:
    harness = Harness(autostart=False)
    app = in_process_app(settings_for(keys_file, **overrides), harness)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield Page(client, harness, keys_file, app)


async def wait_for_state(page: Page, pipeline_id: str, state: str) -> str:
    async with asyncio.timeout(10):
        while True:
            html = (await page.client.get(f"/ui/pipelines/{pipeline_id}")).text
            if f'id="pipeline-state">{state.replace("_", " ")}<' in html:
                return html
            await asyncio.sleep(0.05)
