"""A TCP proxy on loopback that misbehaves on demand, between the daemon and PostgreSQL or SpiderIQ.

    async with FaultyProxy(target_port) as proxy:
        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/db"
        proxy.delay(0.2)        # every chunk, each way, this much later
        proxy.blackhole()       # every connection goes silent: bytes are taken and held, no reset
        proxy.sever()           # ... and the server's side of each silent one is closed
        proxy.heal()            # held bytes flow again (as TCP retransmits would deliver them)
        proxy.reset()           # every open connection is cut with a RST
        proxy.retarget(port)    # new connections go elsewhere (a virtual IP that moved)

A black hole here is the peer's application going silent: the kernel still acknowledges bytes and
answers keepalives, so only an application's own timeouts can notice it, which is what this proxy
checks. Loopback cannot lose packets, so TCP keepalives are not what a test here sees working. In a
real network partition the server, too, stops hearing the client and its keepalives end the
session (releasing its locks) while the client may still wait: ``sever`` plays that part, closing
the server's side of every silent connection and leaving the client's side open and silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field


@dataclass(eq=False)
class Link:
    """One proxied connection: the client's side, the server's side and whether bytes flow."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    severed: bool = False

    def cut(self) -> None:
        """Close both sides with a RST (SO_LINGER 0), as a crashed middlebox or peer does."""
        for writer in (self.client, self.server):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultyProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.links: set[Link] = set()
        self.connections = 0
        self._delay_s = 0.0
        self._new_flow = True
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> FaultyProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self.links):
            link.cut()
        self.links.clear()

    # ------------------------------------------------------------ faults
    def delay(self, seconds: float) -> None:
        self._delay_s = seconds

    def blackhole(self, *, new: bool = True) -> None:
        """Every open connection goes silent; with ``new``, so does every later one."""
        for link in self.links:
            link.flowing.clear()
        self._new_flow = not new

    def sever(self) -> None:
        """Close the server's side of every silent connection; the client's side stays silent."""
        for link in self.links:
            if not link.flowing.is_set():
                link.severed = True
                link.server.transport.abort()

    def heal(self) -> None:
        self._new_flow = True
        self._delay_s = 0.0
        for link in self.links:
            link.flowing.set()

    def reset(self) -> None:
        for link in list(self.links):
            link.cut()
        self.links.clear()

    def retarget(self, port: int) -> None:
        self.target_port = port

    # ------------------------------------------------------------ plumbing
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        link = Link(client=writer, server=up_writer)
        if self._new_flow:
            link.flowing.set()
        self.links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer)),
            asyncio.create_task(self._pump(link, up_reader, writer)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        if link.severed:
            return  # the client's side stays open, and silent, until the proxy closes
        self.links.discard(link)
        for w in (writer, up_writer):
            w.transport.abort()

    async def _pump(self, link: Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                data = await source.read(65536)
                if not data:
                    break
                await link.flowing.wait()
                if self._delay_s:
                    await asyncio.sleep(self._delay_s)
                sink.write(data)
                await sink.drain()
        # one side ended: end the other (a half-close is not what a proxy failure looks like),
        # unless the server's side was severed on purpose: then the client hears nothing
        if not link.severed:
            link.cut()
