"""The stack starts: every service turns healthy and answers on its published port."""

from __future__ import annotations

import time

import httpx
import pytest

#: What runs in every mode (Postgres only runs behind the official server).
EXPECTED_SERVICES = {"resonate", "databricks", "mailsink", "api", "worker", "notifier"}
#: Longest Docker may take to report a healthy stack: its checks' interval and timeout, twice over.
DOCKER_VERDICT_SECONDS = 20


def test_every_service_is_running_and_healthy(stack) -> None:
    """Healthy as Docker itself judges it, by each image's HEALTHCHECK on its own schedule."""
    services = stack.services()
    assert set(services) >= EXPECTED_SERVICES
    # The stack fixture runs the checks itself to start each service as soon as its dependencies
    # pass; Docker's own verdict follows at its next scheduled check (HEALTHCHECK_INTERVAL, 5 s).
    deadline = time.monotonic() + DOCKER_VERDICT_SECONDS
    while (states := stack.states()) != {service: ("running", "healthy") for service in services}:
        assert time.monotonic() < deadline, states
        time.sleep(0.5)


def test_gateway_answers_healthz(stack) -> None:
    response = httpx.get(f"{stack.api_url}/healthz", timeout=5)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("base_url", ["databricks_url", "mailsink_url", "worker_ops_url", "notifier_ops_url"])
def test_published_health_endpoint_answers(stack, base_url: str) -> None:
    response = httpx.get(f"{getattr(stack, base_url)}/healthz", timeout=5)
    assert response.status_code == 200, response.text


def test_ports_are_published_on_loopback_only(stack) -> None:
    published = stack.published_ports()
    assert {service for service, _, _ in published} >= EXPECTED_SERVICES
    assert {host for _, _, host in published} == {"127.0.0.1"}, published
