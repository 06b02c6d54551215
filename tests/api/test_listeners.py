"""The gateway's two listeners, on real sockets: the whole API, and the callback alone.

Served as ``python -m pipeline_api`` serves them with ``CALLBACK_PORT`` set:
one uvicorn server, one lifespan, both sockets (here on 127.0.0.1, ports
picked by the system).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from pipeline_api.__main__ import listening_socket
from pipeline_api.app import create_app
from pipeline_api.listeners import ByListener, create_callback_app
from pipeline_shared.logs import configure_logging
from pipeline_shared.signing import derive_callback_key, sign_callback
from tests.support.gateway_app import AUTHENTICATED, SETTINGS, first_callback_id, in_process_app
from tests.support.loopback_server import loopback_socket, serving, url_of
from tests.support.pipeline_harness import SECRET, Harness

#: The AUTHENTICATED headers' Authorization, as a raw request line.
AUTHORIZATION = "".join(f"{name}: {value}\r\n" for name, value in AUTHENTICATED.items())


@dataclass
class Listeners:
    gateway: httpx.AsyncClient
    callbacks: httpx.AsyncClient


@pytest.fixture
async def listeners() -> AsyncIterator[Listeners]:
    harness = Harness(autostart=False)
    gateway = in_process_app(SETTINGS, harness)
    main, public = loopback_socket(), loopback_socket()
    app = ByListener(gateway, create_callback_app(gateway), public.getsockname()[1])
    async with (
        serving(app, main, public),
        httpx.AsyncClient(base_url=url_of(main), headers=AUTHENTICATED) as api,
        httpx.AsyncClient(base_url=url_of(public), headers=AUTHENTICATED) as callbacks,
    ):
        yield Listeners(api, callbacks)


async def test_a_callback_on_the_callback_port_settles_a_pipeline_started_on_the_gateway_port(
    listeners: Listeners,
) -> None:
    started = await listeners.gateway.post("/pipelines", json={"email": "two-ports@example.com"})
    assert started.status_code == 202, started.text
    pipeline_id = started.json()["id"]
    async with asyncio.timeout(10):
        while (await listeners.gateway.get(f"/pipelines/{pipeline_id}")).json()["state"] != "waiting":
            await asyncio.sleep(0.02)
    promise_id = first_callback_id(pipeline_id)
    body = json.dumps({"promise_id": promise_id, "status": "success", "result": {"port": "callback"}}).encode()
    headers = sign_callback(derive_callback_key(SECRET, promise_id), body) | {"content-type": "application/json"}

    response = await listeners.callbacks.post("/callbacks/databricks", content=body, headers=headers)

    assert (response.status_code, response.json()["outcome"]) == (200, "accepted"), response.text
    async with asyncio.timeout(10):
        while (doc := (await listeners.gateway.get(f"/pipelines/{pipeline_id}")).json())["state"] != "succeeded":
            await asyncio.sleep(0.02)
    assert doc["result"] == {"port": "callback"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/docs"),
        ("GET", "/redoc"),
        ("GET", "/openapi.json"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/metrics/"),
        ("POST", "/pipelines"),
        ("GET", "/pipelines/some-id"),
        ("POST", "/pipelines/some-id/cancel"),
        ("GET", "/run?id=some-id"),
        ("GET", "/"),
        ("GET", "/callbacks/databricks/../../docs"),
    ],
)
async def test_the_callback_port_answers_nothing_but_the_callback(listeners: Listeners, method: str, path: str) -> None:
    response = await listeners.callbacks.request(method, path, json={"email": "x@example.com"})

    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found"


async def test_the_callback_port_refuses_other_methods_on_the_callback_and_unsigned_callbacks(
    listeners: Listeners,
) -> None:
    other_method = await listeners.callbacks.get("/callbacks/databricks")
    unsigned = await listeners.callbacks.post("/callbacks/databricks", json={"promise_id": "p:1", "status": "success"})
    oversized = await listeners.callbacks.post(
        "/callbacks/databricks", content=b"x" * (SETTINGS.CALLBACK_MAX_BODY_BYTES + 1)
    )

    assert (other_method.status_code, other_method.json()["code"]) == (405, "method_not_allowed")
    assert "POST" in other_method.headers["allow"]
    assert (unsigned.status_code, unsigned.json()["code"]) == (401, "invalid_signature")
    assert (oversized.status_code, oversized.json()["code"]) == (413, "body_too_large")


async def test_the_gateway_port_still_serves_everything(listeners: Listeners) -> None:
    assert (await listeners.gateway.get("/healthz")).json() == {"status": "ok"}
    assert (await listeners.gateway.get("/docs")).status_code == 200
    assert "/callbacks/databricks" in (await listeners.gateway.get("/openapi.json")).json()["paths"]
    anonymous = await listeners.gateway.get("/pipelines/some-id", headers={"authorization": ""})
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("listener", "path", "media_type"),
    [
        ("callbacks", "/callbacks/databricks", "application/json"),
        ("gateway", "/pipelines", "application/json"),
        ("gateway", "/ui/sign-in", "application/x-www-form-urlencoded"),
    ],
)
async def test_a_client_that_goes_away_mid_body_is_one_info_line_without_a_traceback(
    listeners: Listeners, caplog: pytest.LogCaptureFixture, listener: str, path: str, media_type: str
) -> None:
    port = getattr(listeners, listener).base_url.port
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: x\r\n{AUTHORIZATION}Content-Type: {media_type}\r\n"
                'Content-Length: 1000\r\n\r\n{"promise_id": '.encode()
            )
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            await writer.wait_closed()
        async with asyncio.timeout(5):
            while sum("went away" in r.getMessage() for r in caplog.records) < 3:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)

    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in gone] == [(logging.INFO, None)] * 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], caplog.text
    assert (await listeners.gateway.get("/healthz")).json() == {"status": "ok"}


def test_the_callback_listeners_socket_leaves_the_json_logging_alone() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("api", "INFO")
        with contextlib.closing(listening_socket(create_callback_app(create_app(SETTINGS)), 0)):
            pass
        access = logging.getLogger("uvicorn.access")
        assert access.level == logging.WARNING and not access.handlers, "uvicorn's access lines stay off"
        assert not logging.getLogger("uvicorn").handlers and not logging.getLogger("uvicorn.error").handlers
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
