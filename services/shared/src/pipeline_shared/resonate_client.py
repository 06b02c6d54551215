"""The one way a service connects to the Resonate server.

Every service talks to Resonate over HTTP (requests) and Server-Sent Events
(work and wake-ups pushed to it). Two things the SDK leaves to us:

- Knowing whether the push channel is up. A worker whose event stream is down
  receives no work, so it must not report itself ready. The SDK's
  ``SSEConnection`` keeps that to itself; :class:`MonitoredSSEConnection`
  observes it.
- A reconnect ladder that suits containers. The SDK backs off to a minute
  between attempts; after a server restart we want workers back in seconds.
- An event stream that outlives five minutes. The SDK opens it with
  aiohttp's default session, whose total timeout (300 s) ends the stream with
  a ``TimeoutError`` that its reconnect loop does not catch: the listener
  task dies and the process never receives work again.
- An event stream whose far end is gone. An idle stream carries no bytes, so
  one whose server vanished without closing it (host lost, network
  partition, a NAT or firewall forgetting the connection) would look open
  forever, and the process would wait for work that can no longer reach it.
  TCP keepalive probes turn that silence into a connection error, which the
  SDK's loop answers by reconnecting.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import timedelta

import aiohttp
from resonate.connections import HttpConnection, SSEConnection
from resonate.error import ResonateError, ServerError
from resonate.resonate import Resonate
from resonate.retry import ExponentialBackoff

#: Reconnect quickly after a server restart, but never hammer a server that
#: stays down: 0.2 s doubling to 5 s.
RECONNECT_BACKOFF = ExponentialBackoff(initial=0.2, factor=2.0, max_delay=5.0)

#: The event stream is one request that lasts as long as the process: no
#: total or read timeout (an idle stream is silent), only a bound on connecting.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)

#: Unanswered keepalive probes after which the kernel declares the stream dead.
KEEPALIVE_PROBES = 3

#: The id the readiness probe reads. It never exists; a 404 proves the server
#: answered, which is all readiness needs.
_PROBE_PROMISE_ID = "readiness-probe-never-created"


class MonitoredSSEConnection(SSEConnection):
    """An ``SSEConnection`` that says whether its event stream is open.

    It hooks the SDK's stream reader (a private method of the pinned
    resonate-sdk 0.8.1; the ops tests fail if that ever changes), which runs
    exactly while a stream is established, and its session factory, to give
    the stream no total timeout and a socket that probes a silent server.
    """

    def __init__(self, *args: object, keepalive_seconds: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.connected = asyncio.Event()
        self.keepalive_seconds = keepalive_seconds

    def _ensure_session(self) -> aiohttp.ClientSession:
        # The SDK would build a session with aiohttp's 300 s total timeout
        # and no keepalive (see the module docstring); build it first, right.
        if self._session is None and not self._stopped:
            connector = aiohttp.TCPConnector(socket_factory=self._keepalive_socket)
            self._session = aiohttp.ClientSession(timeout=STREAM_TIMEOUT, connector=connector)
        return super()._ensure_session()

    def _keepalive_socket(self, addr_info: aiohttp.AddrInfoType) -> socket.socket:
        """A TCP socket that probes an idle peer: a dead one is noticed within twice ``keepalive_seconds``."""
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=kind, proto=proto)
        idle = max(1, round(self.keepalive_seconds))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle // KEEPALIVE_PROBES))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
        return sock

    async def _read_stream(self, resp: aiohttp.ClientResponse) -> None:
        self.connected.set()
        try:
            await super()._read_stream(resp)
        finally:
            self.connected.clear()


class ResonateLink:
    """A started Resonate client plus what is needed to judge its health."""

    def __init__(self, resonate: Resonate, source: MonitoredSSEConnection | None) -> None:
        self.resonate = resonate
        self._source = source

    @property
    def listening(self) -> bool:
        """Whether work can be pushed to this process right now."""
        return self._source is not None and self._source.connected.is_set()

    async def reachable(self, timeout: float = 2.0) -> str | None:
        """None when the server answers a request, else why not."""
        try:
            await asyncio.wait_for(self.resonate.promises.get(_PROBE_PROMISE_ID), timeout)
        except ServerError as exc:
            if exc.code == 404:
                return None
            return f"Resonate server answered {exc.code}: {exc.message}"
        except TimeoutError:
            return f"Resonate server did not answer within {timeout} s"
        except ResonateError as exc:
            return f"Resonate server unreachable: {exc}"
        return None

    async def readiness(self, *, needs_push: bool) -> str | None:
        """None when ready, else the reason; ``needs_push`` for processes that run work."""
        if needs_push and not self.listening:
            return "event stream to the Resonate server is not connected"
        return await self.reachable()


def connect(
    url: str,
    group: str,
    *,
    token: str | None = None,
    listen: bool = True,
    max_concurrent_tasks: int | None = None,
    lease_seconds: float | None = None,
    stream_keepalive_seconds: float = 30.0,
) -> ResonateLink:
    """Build a Resonate client in ``group``, not yet started.

    Register functions and dependencies first, then ``link.resonate.start()``
    (in a running loop): once started, work may arrive at any moment.
    ``listen=False`` makes a send-only client: it creates and settles promises
    but receives no work, so no address is advertised for it.
    """
    pid = uuid.uuid4().hex
    source = (
        MonitoredSSEConnection(
            url=url,
            pid=pid,
            group=group,
            auth=token,
            backoff=RECONNECT_BACKOFF,
            keepalive_seconds=stream_keepalive_seconds,
        )
        if listen
        else None
    )
    resonate = Resonate(
        network=HttpConnection(url=url, auth=token, backoff=RECONNECT_BACKOFF),
        sources=[source] if source is not None else [],
        group=group,
        pid=pid,
        token=token,
        max_concurrent_tasks=max_concurrent_tasks,
        ttl=timedelta(seconds=lease_seconds) if lease_seconds is not None else None,
        autostart=False,
    )
    return ResonateLink(resonate, source)
