"""Container healthcheck: exit 0 when ``$HEALTHCHECK_URL`` answers 2xx, else 1 saying why.

Every Python image of the stack runs this (infra/docker/python-service.Dockerfile
sets the URL from its port). Images carry no curl, and some services do not
ship this project's shared library, so it needs only the standard library. The
image sets ``HEALTHCHECK_URL`` (``http://HOST:PORT/PATH``); a container that
moves its port overrides it.

Written on a bare socket rather than with urllib, and run with ``python -I -S``:
Docker runs it every couple of seconds in every container, and urllib's imports
(http.client, email, ssl) more than doubled what a check costs the machine (about
50 ms of CPU of a 115 ms check, with two test stacks up a third of a core).
"""

from __future__ import annotations

import os
import socket
import sys

#: Short, so a hung service fails its check instead of stalling Docker's.
TIMEOUT_SECONDS = 3.0
#: Enough of an answer for its status line and the start of its reason.
READ_BYTES = 1024


def _address(url: str) -> tuple[str, int, str]:
    """Host, port and path of a plain ``http://`` URL; ValueError naming what is wrong with another."""
    scheme, separator, rest = url.partition("://")
    if scheme != "http" or not separator:
        raise ValueError(f"HEALTHCHECK_URL must be http://HOST:PORT/PATH, not {url!r}")
    authority, slash, path = rest.partition("/")
    host, _, port = authority.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"HEALTHCHECK_URL must name a host and a port: {url!r}")
    return host, int(port), slash + path


def check(url: str) -> str | None:
    """None when ``url`` is healthy, else the reason it is not."""
    try:
        host, port, path = _address(url)
    except ValueError as exc:
        return str(exc)
    request = f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_SECONDS) as conn:
            conn.sendall(request)
            answer = b""
            while len(answer) < READ_BYTES and (chunk := conn.recv(READ_BYTES - len(answer))):
                answer += chunk
    except OSError as exc:
        return f"{url} unreachable: {exc}"
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return f"{url} did not answer HTTP: {status_line[:100]!r}"
    status = int(parts[1])
    if 200 <= status < 300:
        return None
    return f"{url} answered {status}: {body[:500].decode(errors='replace')}"


def main() -> int:
    url = os.environ.get("HEALTHCHECK_URL")
    if not url:
        print("HEALTHCHECK_URL is not set", file=sys.stderr)
        return 2
    problem = check(url)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
