"""A stand-in for the gateway's callback endpoint: records what arrives, answers as told.

It listens on 127.0.0.1 in a thread, keeps every request's exact bytes and
headers (signatures are over bytes), answers each POST with the next status
from a script (200 once the script runs out), and serves CSV files for the
notebook's http(s) ``source`` (recording each GET, and answering a redirect
where told to).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class _Server(ThreadingHTTPServer):
    #: Hundreds of notebooks may call back at once; the default backlog of 5 would refuse them.
    request_queue_size = 512
    daemon_threads = True


class CallbackReceiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.files: dict[str, bytes] = {}
        #: Paths answered with a 302 to the given location.
        self.redirects: dict[str, str] = {}
        #: Every GET's path, in order.
        self.fetched: list[str] = []
        self._script: list[int] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver._changed:
                    receiver.requests.append(Received(self.path, headers, body))
                    status = receiver._script.pop(0) if receiver._script else 200
                    receiver._changed.notify_all()
                self._answer(status, b'{"detail": "scripted answer"}')

            def do_GET(self) -> None:
                with receiver._changed:
                    receiver.fetched.append(self.path)
                if self.path in receiver.redirects:
                    self._answer(302, b"", location=receiver.redirects[self.path])
                    return
                content = receiver.files.get(self.path)
                self._answer(200 if content is not None else 404, content or b"not found")

            def _answer(self, status: int, content: bytes, location: str | None = None) -> None:
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown waits for it, and every test shuts one down.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def answer_with(self, *statuses: int) -> None:
        """The statuses the next POSTs get, in order; 200 after them."""
        with self._changed:
            self._script = list(statuses)

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """The first ``count`` requests once they have arrived; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(self.requests)} of {count} requests arrived in {timeout}s")
                self._changed.wait(remaining)
            return list(self.requests[:count])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
