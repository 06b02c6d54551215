"""What one connection may cost the gateway: header size and count, time to send, connections per listener.

Each listener has its own bounds (:class:`ListenerLimits`): the gateway's
(``PORT``) and the public callback listener's (``CALLBACK_PORT``), which is
as tight as a callback allows. A request over a bound is refused as HTTP
says, with the gateway's JSON error body, and the connection is closed:

- request line and headers larger than ``max_header_bytes``, or more than
  ``max_headers`` of them: 431, as soon as the bound is passed, without
  reading the rest (so a 32 MB header costs at most the bound plus one
  socket read);
- headers not all in within ``header_timeout`` of the connection opening
  (or of the request's first byte): 408 (a connection that sent nothing is
  closed without one);
- a body not all in within ``body_timeout`` of its headers: 408;
- more than ``max_connections`` open on the listener: 503 with
  ``Retry-After``, once the request's headers are in (answered before
  reading it, the client would often meet a reset instead of the answer);
- idle for ``keep_alive`` seconds between requests: closed. uvicorn's own
  timer, set per listener; its default (5 s) equals httpx's pool expiry, so
  a client reusing a connection at the moment the server closes it lost its
  request ("Server disconnected without sending a response").

Written by hand as a subclass of uvicorn's httptools protocol, because
uvicorn (0.54) offers none of these for httptools, the parser it picks and
the fastest it has: ``h11_max_incomplete_event_size`` bounds headers for h11
only, and answers 400; ``limit_concurrency`` counts the whole server (both
listeners together, connections and tasks alike) and answers a plain-text
503 without ``Retry-After``; there is no header or body timeout, only
``timeout_keep_alive`` for idle connections between requests (kept, and
set per listener). httptools itself (llhttp) has no bound on a header's size: it
gathers a header whole before handing it over, hence the count of bytes
received while headers are incomplete.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from .settings import GatewaySettings

#: Told with a 503 for one connection too many: a connection usually lasts well under this.
CONNECTIONS_RETRY_AFTER_SECONDS = 1
#: Connections beyond this many times the bound are closed unanswered: answering costs a parse each.
HARD_CONNECTIONS_FACTOR = 2
#: How long a refused connection is read (and what it sends dropped) after the refusal, before it is closed.
#: Closed at once, a client still sending would be sent a reset, which discards the refusal unread.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class ListenerLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    max_connections: int
    keep_alive: float


def listener_limits(settings: GatewaySettings) -> dict[int | None, ListenerLimits]:
    """Each listener's bounds, by its port; None is every port not named (the gateway's)."""
    gateway = ListenerLimits(
        settings.HTTP_MAX_HEADER_BYTES,
        settings.HTTP_MAX_HEADERS,
        settings.HTTP_HEADER_TIMEOUT_SECONDS,
        settings.HTTP_BODY_TIMEOUT_SECONDS,
        settings.HTTP_MAX_CONNECTIONS,
        settings.HTTP_KEEP_ALIVE_SECONDS,
    )
    callbacks = ListenerLimits(
        settings.CALLBACK_MAX_HEADER_BYTES,
        settings.CALLBACK_MAX_HEADERS,
        settings.CALLBACK_HEADER_TIMEOUT_SECONDS,
        settings.CALLBACK_BODY_TIMEOUT_SECONDS,
        settings.CALLBACK_MAX_CONNECTIONS,
        settings.CALLBACK_KEEP_ALIVE_SECONDS,
    )
    return {None: gateway} if settings.CALLBACK_PORT is None else {None: gateway, settings.CALLBACK_PORT: callbacks}


def limited_protocol(limits: dict[int | None, ListenerLimits]) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, holding these listeners' bounds and open connections."""
    return type(
        "LimitedHttpProtocol",
        (LimitedHttpProtocol,),
        {"limits_by_port": limits, "open_by_port": {port: set() for port in limits}},
    )


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with each listener's bounds (see the module docstring)."""

    limits_by_port: ClassVar[dict[int | None, ListenerLimits]]
    open_by_port: ClassVar[dict[int | None, set[LimitedHttpProtocol]]]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        port = self.server[1] if self.server and self.server[1] in self.limits_by_port else None
        self.limits = self.limits_by_port[port]
        self.timeout_keep_alive = self.limits.keep_alive
        self.open = self.open_by_port[port]
        self.refused = False
        self.awaiting_headers = True
        #: Bytes received while the current request's headers were incomplete (a bound on memory).
        self.received_before_headers = 0
        #: The exact size of the current request's line and headers, as parsed.
        self.header_size = 0
        self.body_timer: asyncio.TimerHandle | None = None
        self.header_timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.limits.header_timeout, self._headers_too_slow
        )
        self.over_limit = len(self.open) >= self.limits.max_connections
        if len(self.open) >= HARD_CONNECTIONS_FACTOR * self.limits.max_connections:
            self.refused = True
            transport.abort()
            return
        self.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open.discard(self)
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, but telling a refusal raised by a callback below from a malformed request.
        if self.refused:
            return
        self._unset_keepalive_if_required()
        if self.awaiting_headers:
            self.received_before_headers += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Refused):
                self._refuse(exc.__context__)
                return
            self._malformed()
            return
        except httptools.HttpParserError:
            self._malformed()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self.awaiting_headers and self.received_before_headers > self.limits.max_header_bytes:
            self._refuse(self._headers_too_large())

    # ── parser callbacks ─────────────────────────────────────────────────

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_size = 0
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_too_slow)

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        if len(self.headers) >= self.limits.max_headers:
            raise _Refused(431, "too_many_headers", f"the request has more than {self.limits.max_headers} header lines")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        if self.over_limit:
            raise _Refused(
                503,
                "too_many_connections",
                f"this listener has {self.limits.max_connections} connections open, as many as it takes; try again",
                retry_after=CONNECTIONS_RETRY_AFTER_SECONDS,
            )
        self.body_timer = self.loop.call_later(self.limits.body_timeout, self._body_too_slow)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        # What follows on this connection is the next request's line and headers.
        self.awaiting_headers = True
        self.received_before_headers = 0
        super().on_message_complete()

    # ── refusals ─────────────────────────────────────────────────────────

    def _count_header_bytes(self, size: int) -> None:
        self.header_size += size
        if self.header_size > self.limits.max_header_bytes:
            raise self._headers_too_large()

    def _headers_too_large(self) -> _Refused:
        return _Refused(
            431, "headers_too_large", f"the request line and headers exceed {self.limits.max_header_bytes} bytes"
        )

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if not self.awaiting_headers or self.transport.is_closing():
            return
        if self.received_before_headers == 0:
            # Nothing was asked (a browser's spare connection, say): closed without an answer.
            self.transport.close()
        else:
            self._refuse(
                _Refused(
                    408,
                    "request_timeout",
                    f"the request's headers did not arrive within {self.limits.header_timeout:g} s",
                )
            )

    def _body_too_slow(self) -> None:
        self.body_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:
            # The app is still waiting for the body: it is told the client left, and answers no one.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            self._refuse(
                _Refused(
                    408,
                    "request_timeout",
                    f"the request's body did not arrive within {self.limits.body_timeout:g} s of its headers",
                )
            )
        else:
            self.transport.close()

    def _malformed(self) -> None:
        self.logger.warning("Invalid HTTP request received.")
        self._refuse(_Refused(400, "invalid_http", "the request is not valid HTTP/1.1"))

    def _refuse(self, refusal: _Refused) -> None:
        """Answer ``refusal`` (unless a response is under way) and close: what the client sends after is dropped."""
        self.refused = True
        self._cancel_timers()
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            body = json.dumps({"code": refusal.code, "message": refusal.message}).encode()
            head = [
                f"HTTP/1.1 {refusal.status} {_REASONS[refusal.status]}",
                "content-type: application/json",
                f"content-length: {len(body)}",
                "connection: close",
            ]
            if refusal.retry_after is not None:
                head.append(f"retry-after: {refusal.retry_after}")
            self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _cancel_timers(self) -> None:
        for timer in (self.header_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.header_timer = self.body_timer = None


_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
