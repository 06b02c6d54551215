"""``python -m mailsink`` as a process: configured by environment, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import aiosmtplib
import httpx

from tests.support.mail_messages import make_message, unique_address


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sink_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSINK_")}
    env.update(overrides)
    return env


async def wait_healthy(url: str, process: subprocess.Popen, within: float = 20.0) -> dict:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as http:
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                response = await http.get(f"{url}/healthz")
                if response.status_code == 200:
                    return response.json()
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{url} not healthy after {within} s"
            await asyncio.sleep(0.05)


async def test_module_entry_point_serves_on_configured_ports_and_stops_on_sigterm() -> None:
    smtp_port, http_port = free_port(), free_port()
    env = sink_env(
        MAILSINK_SMTP_HOST="127.0.0.1",
        MAILSINK_SMTP_PORT=str(smtp_port),
        MAILSINK_HTTP_HOST="127.0.0.1",
        MAILSINK_HTTP_PORT=str(http_port),
        MAILSINK_AUTH_USERNAME="notifier",
        MAILSINK_AUTH_PASSWORD="process-test-password",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mailsink"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{http_port}"
        assert (await wait_healthy(url, process))["status"] == "ok"
        rcpt = unique_address()
        await aiosmtplib.send(
            make_message(to=rcpt),
            hostname="127.0.0.1",
            port=smtp_port,
            username="notifier",
            password="process-test-password",
        )
        async with httpx.AsyncClient(base_url=url) as http:
            found = await http.get("/messages/wait", params={"to": rcpt, "timeout": 10})
        assert found.json()["messages"][0]["authenticated_as"] == "notifier"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    # Stopped by the signal it was sent, promptly, and said so in its log.
    assert process.returncode in (0, -signal.SIGTERM), stderr
    assert b"Shutting down" in stderr or process.returncode == 0, stderr


def test_bad_configuration_exits_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailsink"],
        env=sink_env(MAILSINK_SMTP_PORT="not-a-port", MAILSINK_AUTH_USERNAME="only-half"),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"MAILSINK_SMTP_PORT" in result.stderr


def test_port_in_use_exits_with_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mailsink"],
            env=sink_env(MAILSINK_SMTP_HOST="127.0.0.1", MAILSINK_SMTP_PORT=str(port)),
            capture_output=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert b"cannot start" in result.stderr
