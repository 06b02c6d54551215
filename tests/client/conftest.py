"""Fixtures of the client's tests: a real gateway in process, served on loopback, that takes one key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline_api.auth.keys import mint
from pipeline_api.auth.principals import Scope
from tests.support.gateway_app import keyed_app
from tests.support.loopback_server import loopback_socket, serving, url_of
from tests.support.served_gateway import ServedGateway

CLIENT_KEY, CLIENT_KEY_ENTRY = mint("client-user", frozenset({Scope.START, Scope.READ, Scope.CANCEL}))


@pytest.fixture
async def served_gateway(tmp_path: Path) -> AsyncIterator[ServedGateway]:
    """The gateway over an in-process pipeline (no index database: its event streams answer 503)."""
    harness, app = keyed_app(tmp_path / "keys.toml", CLIENT_KEY_ENTRY)
    sock = loopback_socket()
    async with serving(app, sock):
        yield ServedGateway(url_of(sock), CLIENT_KEY, harness)
