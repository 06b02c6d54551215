"""A lean HTTP/1.1 load generator for the throughput comparison (figure 4).

The generator shares two cores with the gateway it measures. aiohttp spends
about as much CPU per request as the gateway spends answering ``/healthz``
(measured here: 140-230 µs against 200-290 µs), so with aiohttp the trivial
endpoint's figure would be mostly the client's. This generator keeps what a
client must do per request to a write of prepared bytes and a C parser pass
over the answer: connections are plain asyncio protocols, responses are
parsed by httptools (the parser uvicorn itself uses), and each connection
sends its next request when the previous answer is complete (keep-alive, no
pipelining), like a browser or a notebook would. Both endpoints are measured
with it, in the same process, the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from .bench_load import Saturation


def encode_request(method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """One complete HTTP/1.1 request, ready to write."""
    parts = urlsplit(url)
    lines = [
        f"{method} {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"host: {parts.netloc}",
    ]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection: write a request, await the status of its complete answer."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[int] | None = None
        self._transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"unparsable answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection closed: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    # httptools callback: the whole answer (headers and body) has arrived.
    def on_message_complete(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(self._parser.get_status_code())

    async def request(self, raw: bytes) -> int:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return await self._answer

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass
class WireTarget:
    host: str
    port: int

    @classmethod
    def of(cls, base_url: str) -> WireTarget:
        parts = urlsplit(base_url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80)


async def saturate_wire(
    target: WireTarget, requests: Sequence[bytes], concurrency: int, seconds: float, warmup_seconds: float
) -> Saturation:
    """Keep ``concurrency`` connections busy for ``warmup_seconds + seconds``; count answers in the last ``seconds``.

    Connection ``c`` sends ``requests[(c + k * concurrency) % len(requests)]``
    as its k-th request, so every prepared request is used in turn.
    """
    loop = asyncio.get_running_loop()
    connections = [(await loop.create_connection(_Connection, target.host, target.port))[1] for _ in range(concurrency)]
    begin = loop.time() + warmup_seconds
    end = begin + seconds
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failed = 0

    async def drive(index: int, connection: _Connection) -> None:
        nonlocal failed
        sent = index
        while loop.time() < end:
            raw = requests[sent % len(requests)]
            sent += concurrency
            started = loop.time()
            try:
                status: int | None = await connection.request(raw)
            except ConnectionError:
                status = None
            finished = loop.time()
            if begin <= finished <= end:
                if status is None or not 200 <= status < 300:
                    failed += 1
                else:
                    latencies.append(finished - started)
                if status is not None:
                    statuses[status] = statuses.get(status, 0) + 1
            if status is None:
                return

    try:
        await asyncio.gather(*(drive(i, c) for i, c in enumerate(connections)))
    finally:
        for connection in connections:
            connection.close()
    return Saturation(seconds, len(latencies), failed, latencies, statuses)
