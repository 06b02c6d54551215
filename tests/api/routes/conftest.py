"""Fixtures of the route tests: the gateway over an in-process pipeline, one per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.gateway_app import Gateway, serve


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    async with serve() as gateway:
        yield gateway
