"""One running sink: the SMTP listener and the HTTP API on one event loop.

Both listen on sockets bound here, before either server starts, so a caller
asking for port 0 learns the real ports at once; tests run many sinks side by
side that way. Sharing one loop means the store, the fault plan and the
counters need no locks, and a long poll wakes the moment SMTP stores a
message.

The HTTP listener serves the JSON API (:mod:`mailsink.api`) and, beside it,
the pages a developer reads the mail on (:mod:`mailsink.ui`); both read the
one store.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from types import TracebackType
from typing import Self

import aiosmtplib
import uvicorn

from mailsink.api import create_app
from mailsink.faults import FaultPlan
from mailsink.smtp import SinkStats, SmtpOptions, smtp_protocol_factory
from mailsink.store import Limits, MailStore
from mailsink.ui import create_icon_router, create_ui_router

log = logging.getLogger(__name__)

#: How long /healthz waits for the sink's own SMTP listener to answer.
PROBE_TIMEOUT_SECONDS = 2.0
#: How long stopping waits for open HTTP requests (long polls) to finish.
HTTP_SHUTDOWN_SECONDS = 2.0


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose
    # proto says TCP, and socket.create_server leaves it 0. Without it the
    # multi-line EHLO reply meets Nagle and delayed ACKs: 40 ms per session.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _reachable(host: str) -> str:
    """Where to connect to reach a listener bound to ``host``."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


async def probe_smtp(host: str, port: int, *, implicit_tls: bool = False) -> str:
    """EHLO and NOOP to an SMTP listener; its NOOP reply, or an exception."""
    client = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        use_tls=implicit_tls,
        start_tls=False,
        # The sink's certificate is whatever it was given, often self-signed;
        # this checks that SMTP answers, not who it is.
        validate_certs=False,
        local_hostname="healthz.mailsink",
        timeout=PROBE_TIMEOUT_SECONDS,
    )
    async with client:
        await client.ehlo()
        reply = await client.noop()
    return f"{reply.code} {reply.message}"


class MailSink:
    """SMTP listener, store, fault plan and HTTP API, started and stopped together.

    Use as ``async with MailSink(...) as sink:``; ``sink.smtp_port`` and
    ``sink.http_port`` are the bound ports.
    """

    def __init__(
        self,
        *,
        smtp_host: str = "127.0.0.1",
        smtp_port: int = 0,
        http_host: str = "127.0.0.1",
        http_port: int = 0,
        options: SmtpOptions | None = None,
        limits: Limits | None = None,
        serve_http: bool = True,
    ) -> None:
        self.options = options or SmtpOptions()
        self.store = MailStore(limits)
        self.faults = FaultPlan()
        self.stats = SinkStats()
        self._smtp_address = (smtp_host, smtp_port)
        self._http_address = (http_host, http_port) if serve_http else None
        self._smtp_server: asyncio.Server | None = None
        self._http_server: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.smtp_port = 0
        self.http_port = 0

    @property
    def smtp_host(self) -> str:
        return _reachable(self._smtp_address[0])

    @property
    def http_url(self) -> str:
        if self._http_address is None:
            raise RuntimeError("this sink serves no HTTP API")
        host = _reachable(self._http_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.http_port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        smtp_socket = bind(*self._smtp_address)
        self.smtp_port = smtp_socket.getsockname()[1]
        self._smtp_server = await loop.create_server(
            smtp_protocol_factory(self.options, self.store, self.faults, self.stats),
            sock=smtp_socket,
            ssl=self.options.tls_context if self.options.implicit_tls else None,
        )
        log.info("SMTP listening on %s:%d", self._smtp_address[0], self.smtp_port)
        if self._http_address is not None:
            await self._start_http()

    async def _start_http(self) -> None:
        assert self._http_address is not None
        http_socket = bind(*self._http_address)
        self.http_port = http_socket.getsockname()[1]
        app = create_app(self.store, self.faults, self.stats, self.probe_smtp)
        app.include_router(create_ui_router(self.store))
        app.include_router(create_icon_router())
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=HTTP_SHUTDOWN_SECONDS,
        )
        self._http_server = uvicorn.Server(config)
        self._http_task = asyncio.create_task(self._http_server.serve(sockets=[http_socket]))
        while not self._http_server.started:
            if self._http_task.done():
                # Startup failed; surface uvicorn's error instead of hanging.
                await self._http_task
                raise RuntimeError("the HTTP API stopped during startup")
            await asyncio.sleep(0.01)
        log.info("HTTP API listening on %s:%d", self._http_address[0], self.http_port)

    async def probe_smtp(self) -> str:
        """The sink's own SMTP listener's NOOP reply; raises when it has none."""
        return await probe_smtp(
            self.smtp_host, self.smtp_port, implicit_tls=self.options.implicit_tls
        )

    async def wait_closed(self) -> None:
        """Until the HTTP API stops (a signal, or :meth:`stop`)."""
        if self._http_task is not None:
            await self._http_task
        elif self._smtp_server is not None:
            await self._smtp_server.serve_forever()

    async def stop(self) -> None:
        if self._http_server is not None and self._http_task is not None:
            self._http_server.should_exit = True
            await self._http_task
            self._http_server = self._http_task = None
        if self._smtp_server is not None:
            self._smtp_server.close()
            # Open SMTP sessions would keep wait_closed() waiting; end them.
            self._smtp_server.close_clients()
            await self._smtp_server.wait_closed()
            self._smtp_server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
