"""Fixtures of the deploy tests: the Kubernetes overlays, rendered (tests/support/kubernetes_objects); the
resonate-pg image that runs ``apply``, and one plain Postgres it ran on."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.kubernetes_objects import OVERLAYS, render
from tests.support.plain_postgres import PlainPostgres, apply, running_plain_postgres
from tests.support.resonate_pg import build_image


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[dict[str, Any], ...]:
    """The objects of one overlay; a test taking it runs once per overlay."""
    return render(request.param)


@pytest.fixture
def production() -> tuple[dict[str, Any], ...]:
    """The objects of the production overlay."""
    return render("production")


@pytest.fixture(scope="module")
def resonate_pg_image() -> str:
    """The stack's resonate-pg image, built as compose builds it: what runs ``apply``."""
    return build_image()


@pytest.fixture(scope="module")
def plain_postgres(resonate_pg_image: str) -> Iterator[tuple[PlainPostgres, subprocess.CompletedProcess[str]]]:
    """A plain Postgres with pg_cron, handed over by its provider, and the first apply's outcome on it."""
    with running_plain_postgres() as server:
        yield server, apply(server, resonate_pg_image)


@pytest.fixture
def server(plain_postgres: tuple[PlainPostgres, subprocess.CompletedProcess[str]]) -> PlainPostgres:
    """The server, once the first apply succeeded on it."""
    server, first = plain_postgres
    assert first.returncode == 0, f"apply failed:\n{first.stderr}"
    return server
