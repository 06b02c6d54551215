"""Fixtures of the client's tests: a real gateway in process, served on loopback, that takes one key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline_api.app import create_app
from pipeline_api.auth.keys import mint
from pipeline_api.auth.principals import Scope
from pipeline_shared.resonate_client import ResonateLink
from tests.support.gateway_app import SETTINGS
from tests.support.loopback_server import loopback_socket, serving, url_of
from tests.support.pipeline_harness import Harness
from tests.support.served_gateway import ServedGateway

CLIENT_KEY, CLIENT_KEY_ENTRY = mint("client-user", frozenset({Scope.START, Scope.READ, Scope.CANCEL}))


@pytest.fixture
async def served_gateway(tmp_path: Path) -> AsyncIterator[ServedGateway]:
    """The gateway over an in-process pipeline (no index database: its event streams answer 503)."""
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text(CLIENT_KEY_ENTRY.as_toml())
    settings = SETTINGS.model_copy(
        update={"ENVIRONMENT": "test", "API_KEYS_FILE": keys_file, "RECIPIENT_DOMAINS": ("*",)}
    )
    harness = Harness(autostart=False)
    app = create_app(settings, connect_resonate=lambda _: ResonateLink(harness.resonate, None))
    sock = loopback_socket()
    async with serving(app, sock):
        yield ServedGateway(url_of(sock), CLIENT_KEY, harness)
