"""A TCP relay in front of an SMTP server: counts the connections a client opens and can cut them.

The sink counts transactions, not connections; a connection pool is judged by
how many connections it opens and whether it survives the server ending one.
The relay copies bytes both ways, so it stands in front of plain, STARTTLS or
implicit-TLS servers alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class SmtpRelay:
    """Where the relay listens, and what it has seen."""

    host: str
    port: int
    #: Connections accepted since the relay started.
    opened: int = 0
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def open_now(self) -> int:
        """Connections from the client still open."""
        return len(self._writers)

    async def cut_all(self) -> None:
        """End every open connection as a server would: the client sees the socket close."""
        for writer in list(self._writers):
            writer.close()
        while self._writers:
            await asyncio.sleep(0.005)

    async def until_open(self, count: int, *, within: float = 5.0) -> None:
        """Return once exactly ``count`` client connections are open."""
        async with asyncio.timeout(within):
            while self.open_now != count:
                await asyncio.sleep(0.005)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def smtp_relay(target_host: str, target_port: int) -> AsyncIterator[SmtpRelay]:
    """Relay 127.0.0.1:<a free port> to the target until the block ends."""
    relay = SmtpRelay(host="127.0.0.1", port=0)

    async def accept(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        relay.opened += 1
        relay._writers.add(client_writer)
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
            # Either side closing ends its pipe, which closes the other side,
            # whose pipe then ends too: a cut client leaves no server half.
            await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))
        except OSError:
            client_writer.close()
        finally:
            relay._writers.discard(client_writer)

    server = await asyncio.start_server(accept, relay.host, 0)
    relay.port = server.sockets[0].getsockname()[1]
    try:
        yield relay
    finally:
        server.close()
        server.close_clients()
        await server.wait_closed()
