"""Who receives a message: ``poll://`` addresses resolved to open SSE connections.

Mirrors the real server's poll transport (resonatehq/resonate
``src/transport/transport_http_poll.rs``):

- ``poll://uni@{group}/{pid}`` reaches that process only;
- ``poll://any@{group}/{pid}`` reaches that process when it is connected,
  otherwise any one member of the group;
- ``poll://any@{group}`` reaches any one member of the group.

Delivery is best effort, as on the server: a message for a group with nobody
connected, for a process that is not connected, or for a connection whose
buffer is full is dropped. Nothing is queued for later -- an ``execute``
message comes back on its own when the task's retry deadline resends it, and
a lost ``unblock`` is recovered by the SDK re-registering its listener.

Where this differs from the server (and why) is said on the method.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass, field
from typing import Literal

logger = logging.getLogger(__name__)

#: The real server's default for ``transports.http_poll.max_connections``.
DEFAULT_MAX_CONNECTIONS = 1000

#: Messages a connection may hold unsent before more are dropped. The real
#: server's default is 100, but there every stream drains on its own thread
#: while messages are routed; here routing and streaming share one event loop,
#: so a tick that resumes 150 tasks of one group would drop 50 of them before
#: any stream could run -- drops the real server would not make. With this
#: default only a stalled stream fills its buffer, as on the server.
DEFAULT_BUFFER_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class PollAddress:
    cast: Literal["uni", "any"]
    group: str
    pid: str | None


def parse_poll_address(address: str) -> PollAddress | None:
    """Split ``poll://{uni|any}@{group}[/{pid}]``; None for anything else.

    Parsed by hand rather than with :func:`urllib.parse.urlsplit`, whose
    ``hostname`` lowercases the group: the server treats ``poll`` as an opaque
    scheme and keeps the group's case.
    """
    scheme, sep, rest = address.partition("://")
    if scheme != "poll" or not sep:
        return None
    cast, at, location = rest.partition("@")
    if not at or cast not in ("uni", "any"):
        return None
    group, _, pid = location.partition("/")
    if not group:
        return None
    return PollAddress(cast=cast, group=group, pid=pid or None)  # type: ignore[arg-type]


@dataclass(eq=False, slots=True)
class PollConnection:
    """One open ``GET /poll/{group}/{pid}`` stream and its outbound buffer."""

    conn_id: int
    group: str
    pid: str
    queue: asyncio.Queue[bytes | None]
    open: bool = True

    def close(self) -> None:
        """Stop the stream: the reader sees the sentinel, or ``open`` once it is free."""
        if not self.open:
            return
        self.open = False
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


@dataclass(slots=True)
class DeliveryStats:
    delivered: int = 0
    dropped: int = 0


@dataclass
class PollRegistry:
    """Open poll connections by group, and the routing rules over them."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    buffer_size: int = DEFAULT_BUFFER_SIZE
    stats: DeliveryStats = field(default_factory=DeliveryStats)
    _groups: dict[str, list[PollConnection]] = field(default_factory=dict)
    _turn: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __len__(self) -> int:
        return sum(len(conns) for conns in self._groups.values())

    def register(self, group: str, pid: str) -> PollConnection | None:
        """Open a connection, or None when the server is at ``max_connections``."""
        if len(self) >= self.max_connections:
            return None
        conn = PollConnection(
            conn_id=next(self._ids),
            group=group,
            pid=pid,
            queue=asyncio.Queue(maxsize=self.buffer_size),
        )
        self._groups.setdefault(group, []).append(conn)
        logger.info("poll connection %s opened: group=%s pid=%s", conn.conn_id, group, pid)
        return conn

    def deregister(self, conn: PollConnection) -> None:
        conn.close()
        conns = self._groups.get(conn.group)
        if conns is None or conn not in conns:
            return
        conns.remove(conn)
        if not conns:
            del self._groups[conn.group]
            self._turn.pop(conn.group, None)
        logger.info(
            "poll connection %s closed: group=%s pid=%s", conn.conn_id, conn.group, conn.pid
        )

    def close_all(self) -> None:
        for conns in list(self._groups.values()):
            for conn in list(conns):
                self.deregister(conn)

    def members(self, group: str) -> list[str]:
        """The pids connected in ``group``, oldest connection first."""
        return [conn.pid for conn in self._groups.get(group, ())]

    def route(self, address: str, payload: bytes) -> bool:
        """Hand ``payload`` to the connection ``address`` names; False when dropped."""
        target = parse_poll_address(address)
        conn = self._pick(target) if target is not None else None
        if conn is None:
            self.stats.dropped += 1
            logger.warning("message to %s dropped: no connected receiver", address)
            return False
        try:
            conn.queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            logger.warning(
                "message to %s dropped: connection %s buffer full", address, conn.conn_id
            )
            return False
        self.stats.delivered += 1
        return True

    def _pick(self, target: PollAddress) -> PollConnection | None:
        """Choose the receiving connection.

        Two deliberate differences from the server, neither visible to a
        correct client: a process connected twice (a reconnect racing the old
        stream's close) is reached through its newest connection, not its
        oldest, so a half-dead stream does not swallow messages; and anycast
        takes the group's members in turn instead of at random, so two
        members share work evenly even over a handful of messages.
        """
        conns = self._groups.get(target.group)
        if not conns:
            return None
        if target.pid is not None:
            for conn in reversed(conns):
                if conn.pid == target.pid:
                    return conn
            if target.cast == "uni":
                return None
        turn = self._turn.get(target.group, 0)
        self._turn[target.group] = turn + 1
        return conns[turn % len(conns)]
