"""Readiness as the services report it: over a real event stream to the Resonate stand-in.

``MonitoredSSEConnection`` hooks a private method of the pinned resonate-sdk;
these tests are what notices if an SDK upgrade moves it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import uuid
from typing import Any

import httpx

from pipeline_shared.ops import ops_app
from pipeline_shared.resonate_client import ResonateLink, connect
from tests.resonate_dev.conftest import processes, standin, start_standin  # noqa: F401  (fixtures)


async def until(predicate: Any, what: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def readyz(link: ResonateLink) -> httpx.Response:
    async def readiness() -> str | None:
        return await link.readiness(needs_push=True)

    transport = httpx.ASGITransport(app=ops_app("test", readiness))
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
        return await client.get("/readyz")


async def test_a_worker_is_ready_only_while_its_event_stream_is_open(standin) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    link = connect(standin.url, f"group-{uuid.uuid4().hex[:6]}", lease_seconds=5)
    assert not link.listening
    link.resonate.start()
    try:
        await until(lambda: link.listening, "the event stream open")
        assert await link.readiness(needs_push=True) is None
        assert (await readyz(link)).json() == {"status": "ready", "service": "test"}

        standin.process.send_signal(signal.SIGKILL)
        await until(lambda: not link.listening, "the event stream seen closed")

        response = await readyz(link)
        assert response.status_code == 503
        assert response.json()["message"] == "event stream to the Resonate server is not connected"
    finally:
        await link.resonate.stop()


async def test_a_send_only_client_is_ready_while_the_server_answers(standin) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    link = connect(standin.url, "api", listen=False)
    link.resonate.start()
    try:
        assert await link.readiness(needs_push=False) is None

        standin.process.send_signal(signal.SIGKILL)
        standin.process.wait(timeout=10)

        reason = await link.reachable(timeout=1)
        assert reason is not None and "did not answer" in reason
    finally:
        await link.resonate.stop()


async def test_the_event_stream_has_no_total_timeout() -> None:
    # aiohttp's default session ends any request after 300 s, and the SDK's
    # reconnect loop does not survive the TimeoutError: a worker would stop
    # receiving work five minutes after it connected.
    link = connect("http://127.0.0.1:9", "group", lease_seconds=5)
    source = link._source
    assert source is not None
    session = source._ensure_session()
    try:
        assert (session.timeout.total, session.timeout.sock_read) == (None, None)
    finally:
        await session.close()


async def test_the_event_stream_socket_probes_a_silent_peer(standin) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    # An idle stream carries no bytes: only TCP keepalive notices a server
    # that vanished without closing it (tests/faults partitions one for real).
    link = connect(standin.url, f"group-{uuid.uuid4().hex[:6]}", lease_seconds=5, stream_keepalive_seconds=9)
    source = link._source
    assert source is not None
    opened: list[socket.socket] = []
    make_socket = source._keepalive_socket

    def recorded(addr_info: Any) -> socket.socket:
        opened.append(make_socket(addr_info))
        return opened[-1]

    source._keepalive_socket = recorded  # type: ignore[method-assign]
    link.resonate.start()
    try:
        await until(lambda: link.listening, "the event stream open")
        [stream] = opened
        options = [
            stream.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        ]
        assert options == [1, 9, 3, 3], "dead within 9 + 3 x 3 = 18 s of silence"
    finally:
        await link.resonate.stop()
