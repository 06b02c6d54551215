"""Fixtures of the deploy tests: the Kubernetes overlays, rendered (tests/support/kubernetes_objects)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.kubernetes_objects import OVERLAYS, render


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[dict[str, Any], ...]:
    """The objects of one overlay; a test taking it runs once per overlay."""
    return render(request.param)


@pytest.fixture
def production() -> tuple[dict[str, Any], ...]:
    """The objects of the production overlay."""
    return render("production")
