"""Fixtures: one emulator process for the session, clients for it, and callback receivers.

The emulator runs as a real subprocess on a free loopback port, serving the
tests' own bundle (``bundle/databricks.yml``: small jobs and notebooks of
their own, so these tests do not move when the project's notebooks do), and
most Jobs API calls go through databricks-sdk's own ``WorkspaceClient``: the
wire the worker will use. The subprocess serves the emulator wrapped in the
check of ``sdk_models``, so every answer any test gets, whatever its client,
reads back unchanged through the SDK's models; a test whose calls got an
answer that does not fails at teardown. Runs are kept apart by unique pipeline
ids (every test job but ``refresh`` declares one), so tests share the emulator
without sharing state. Webhook notifications of the session's emulator go to
one session-wide receiver, with Basic credentials.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from databricks.sdk import WorkspaceClient

from tests.support.callback_receiver import CallbackReceiver
from tests.support.emulator_process import (
    DESTINATION_CREDENTIALS,
    DESTINATION_ID,
    Emulator,
    start_emulator,
    stop_emulator,
)


@pytest.fixture(scope="session")
def webhook_sink() -> Iterator[CallbackReceiver]:
    """Where the session's emulator sends the refresh job's webhook notifications."""
    with CallbackReceiver() as running:
        yield running


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory, webhook_sink: CallbackReceiver) -> Iterator[Emulator]:
    username, password = DESTINATION_CREDENTIALS
    destinations = {DESTINATION_ID: {"url": f"{webhook_sink.url}/notifications", "username": username,
                                     "password": password}}  # fmt: skip
    running = start_emulator(
        tmp_path_factory.mktemp("emulator"),
        DATABRICKS_EMULATOR_NOTIFICATION_DESTINATIONS=json.dumps(destinations),
    )
    yield running
    stop_emulator(running)


@pytest.fixture(autouse=True)
def answers_read_back_through_sdk_models(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test whose calls got an answer databricks-sdk's models would misread."""
    yield
    if "emulator" in request.fixturenames:
        problems = request.getfixturevalue("emulator").new_model_problems()
        assert not problems, f"answers outside databricks-sdk's models: {problems}"


@pytest.fixture(scope="session")
def workspace(emulator: Emulator) -> WorkspaceClient:
    return emulator.client()


@pytest.fixture
def control(emulator: Emulator) -> Iterator[httpx.Client]:
    """The emulator's control API, with the token it needs (and raw HTTP for wire-level assertions)."""
    with httpx.Client(
        base_url=emulator.url, headers={"Authorization": f"Bearer {emulator.token}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture
def api(emulator: Emulator) -> Iterator[httpx.Client]:
    """Raw Jobs API calls, with the bearer token."""
    with httpx.Client(
        base_url=emulator.url, headers={"Authorization": f"Bearer {emulator.token}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as running:
        yield running


@pytest.fixture
def pipeline_id() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"
