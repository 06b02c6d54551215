"""Second replicas of the stack's services, and a front that spreads a client's requests over the gateways.

compose.yaml runs one container a service and publishes fixed host ports, so
``docker compose up --scale`` cannot add a second gateway (its ports would
collide). A second replica is therefore a ``docker compose run`` container of
the same service: the same image, environment and mounts, no host ports but
the one given here. It joins the project's network under the service's name
too, as a scaled replica would, so the notebooks' callbacks to ``api`` reach
either gateway (Docker's DNS answers with every running container holding the
name, and drops a stopped one).

Replicas are stopped and started by container, never through ``docker compose
stop SERVICE``, which would act on every container of the service at once.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from tests.support.stack import API, HEALTHY_TIMEOUT_SECONDS, POLL_INTERVAL_SECONDS, Stack, health_check_passes

#: The services that scale by replicas; the Resonate server, the emulator and the mail sink are one each.
REPLICATED = ("api", "worker", "notifier")


def container_health(name: str) -> str:
    """The container's health ("healthy", "starting", ...), or its state when it is not running."""
    inspected = subprocess.run(
        [
            "docker",
            "inspect",
            "--format",
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    state, _, health = inspected.stdout.strip().partition(" ")
    return health if state == "running" else state or "missing"


def wait_container_healthy(name: str, timeout: float = HEALTHY_TIMEOUT_SECONDS) -> float:
    """Block until the container is healthy, as Docker judges it or by its own check run now; how long, in s."""
    began = time.monotonic()
    while (health := container_health(name)) != "healthy" and not (
        health not in {"exited", "dead", "missing"} and health_check_passes(name)
    ):
        assert health not in {"exited", "dead", "missing"}, f"{name} {health} instead of turning healthy"
        assert time.monotonic() - began < timeout, f"{name} not healthy after {timeout:.0f}s ({health})"
        time.sleep(POLL_INTERVAL_SECONDS)
    return time.monotonic() - began


@dataclass(frozen=True)
class Replicas:
    """Each replicated service's two containers, the compose one first, and where each gateway answers."""

    containers: dict[str, tuple[str, str]]
    api_urls: tuple[str, str]


@contextmanager
def second_replicas(stack: Stack) -> Iterator[Replicas]:
    """A second container of the gateway, the worker and the notifier, healthy, for the block; removed after.

    The second gateway's management port is published on the port after the first's.
    """
    host, port = stack.address(API)
    suffix = uuid.uuid4().hex[:6]
    names = {service: f"{stack.container_name(service)}-replica-{suffix}" for service in REPLICATED}
    try:
        for service, name in names.items():
            publish = ["--publish", f"{host}:{port + 1}:8000"] if service == "api" else []
            stack.compose("run", "--detach", "--no-deps", "--name", name, *publish, service)
            _join_under_service_name(name, service)
        for name in names.values():
            wait_container_healthy(name)
        yield Replicas(
            containers={service: (stack.container_name(service), name) for service, name in names.items()},
            api_urls=(stack.api_url, f"http://{host}:{port + 1}"),
        )
    finally:
        for name in names.values():
            subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)


def _join_under_service_name(container: str, service: str) -> None:
    """Reattach a ``compose run`` container to its networks under the service's name (run gives it none)."""
    inspected = subprocess.run(
        ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", container],
        capture_output=True,
        text=True,
        check=True,
    )
    for network in json.loads(inspected.stdout):
        subprocess.run(["docker", "network", "disconnect", network, container], check=True, capture_output=True)
        subprocess.run(
            ["docker", "network", "connect", "--alias", service, network, container], check=True, capture_output=True
        )


class ReplicaFront(httpx.BaseTransport):
    """What a load balancer in front of the gateways does: round robin, and the next replica when one is gone.

    A replica that refuses the connection (stopped), drops it unanswered
    (stopped while the connection was pooled) or answers 503 (starting, or
    stopping) is passed over for the next; the last one's answer or error
    stands. Safe to repeat on another replica because every request the tests
    send through it is: a start names its pipeline id, and reads change nothing.
    """

    def __init__(self, upstreams: list[str]) -> None:
        self._upstreams = [httpx.URL(url) for url in upstreams]
        self._transport = httpx.HTTPTransport()
        self._turn = itertools.count()
        self._lock = threading.Lock()
        #: Requests passed to the next replica, by why: how often a client without a front would have noticed.
        self.passed_over: dict[str, int] = {"refused": 0, "reset": 0, "503": 0}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        first = next(self._turn)
        last = len(self._upstreams) - 1
        for attempt in range(len(self._upstreams)):
            upstream = self._upstreams[(first + attempt) % len(self._upstreams)]
            request.url = request.url.copy_with(host=upstream.host, port=upstream.port)
            try:
                response = self._transport.handle_request(request)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError) as exc:
                # Refused: the replica is stopped. Reset or closed unanswered: a pooled connection
                # to a replica that stopped since.
                if attempt == last:
                    raise
                self._count("refused" if isinstance(exc, httpx.ConnectError) else "reset")
                continue
            if response.status_code == 503 and attempt < last:
                response.close()
                self._count("503")
                continue
            return response
        raise AssertionError("unreachable: the last replica's answer or error stands")

    def _count(self, why: str) -> None:
        with self._lock:
            self.passed_over[why] += 1

    def close(self) -> None:
        self._transport.close()
