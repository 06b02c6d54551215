"""The containers' health check (infra/docker/healthcheck.py), run as Docker runs it, against loopback servers."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HEALTHCHECK = Path(__file__).resolve().parents[2] / "infra" / "docker" / "healthcheck.py"


class _Answers(BaseHTTPRequestHandler):
    """/readyz answers 200; /not-ready 503 with a reason, as a service's readiness does."""

    def do_GET(self) -> None:
        status, body = (200, b'{"ready": true}') if self.path == "/readyz" else (503, b"the Resonate database: down")
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def _run(url: str | None) -> subprocess.CompletedProcess[str]:
    """The check as the Dockerfile runs it: isolated mode, no site packages."""
    env = {} if url is None else {"HEALTHCHECK_URL": url}
    return subprocess.run(
        [sys.executable, "-I", "-S", str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=10
    )


def test_a_ready_service_is_healthy(port: int) -> None:
    result = _run(f"http://127.0.0.1:{port}/readyz")

    assert (result.returncode, result.stderr) == (0, "")


def test_a_service_not_ready_is_unhealthy_and_says_why(port: int) -> None:
    result = _run(f"http://127.0.0.1:{port}/not-ready")

    assert result.returncode == 1
    assert f"http://127.0.0.1:{port}/not-ready answered 503: the Resonate database: down" in result.stderr


def test_nothing_listening_is_unhealthy() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    result = _run(f"http://127.0.0.1:{closed}/readyz")

    assert result.returncode == 1 and "unreachable" in result.stderr


def test_an_answer_that_is_not_http_is_unhealthy() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def babble() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

        thread = threading.Thread(target=babble, daemon=True)
        thread.start()
        result = _run(f"http://127.0.0.1:{listener.getsockname()[1]}/readyz")
        thread.join(5)

    assert result.returncode == 1 and "did not answer HTTP" in result.stderr


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        (None, "HEALTHCHECK_URL is not set"),
        ("https://127.0.0.1:8000/readyz", "must be http://HOST:PORT/PATH"),
        ("http://127.0.0.1/readyz", "must name a host and a port"),
    ],
)
def test_a_missing_or_unusable_url_is_refused_by_name(url: str | None, complaint: str) -> None:
    result = _run(url)

    assert result.returncode in {1, 2} and complaint in result.stderr
