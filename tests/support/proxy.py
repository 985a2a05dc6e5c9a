"""TCP proxies on loopback for fault tests: one that loses a reply, one whose target
can change or be cut off, one that adds latency. Each forwards 127.0.0.1:`port` to a
local `target` port; `async with` starts it, and its end closes what is open."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

from broadcaster.cluster.processes import free_port


class Proxy:
    """What every proxy here shares: its port, its server, and the connections it holds
    open (closed at its end). A subclass forwards a connection in `_handle`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._drop()
        await self._server.wait_closed()

    def _drop(self) -> None:
        for writer in self._open:
            writer.close()
        self._open.clear()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class ReplyDroppingProxy(Proxy):
    """Loses one reply: after the first request containing `trigger`, the server's next
    reply is dropped and both connections are closed. The server did the work, the
    client sees the connection drop: where a retry without an idempotency key
    duplicates."""

    def __init__(self, target: int, trigger: bytes) -> None:
        super().__init__(target)
        self.trigger = trigger
        self.dropped = 0
        self._armed = True

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        drop_next = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
                if self._armed and self.trigger in data:
                    self._armed = False
                    drop_next.set()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if drop_next.is_set():
                    self.dropped += 1
                    return  # the reply never reaches the client
                client_w.write(data)

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        with contextlib.suppress(ConnectionError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()


class SwitchableProxy(Proxy):
    """Forwards to a target that can change, as a DNS name moved to a promoted replica
    does: `switch` drops every open connection and sends new ones to the new target."""

    def __init__(self, target: int) -> None:
        super().__init__(target)
        self.refusing = False

    def switch(self, target: int) -> None:
        """From now on, connect to `target`; close what is open."""
        self.target = target
        self._drop()

    def cut(self) -> None:
        """A partition: close what is open, and refuse every new connection."""
        self.refusing = True
        self._drop()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.refusing:
            client_w.close()
            return
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_w.close()
            return
        self._open |= {client_w, server_w}

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    writer.write(data)
            writer.close()

        await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))
        self._open -= {client_w, server_w}


class LatencyProxy(Proxy):
    """Forwards each byte `delay` seconds late each way (in order): a Redis across a
    network, where every round trip takes a while."""

    def __init__(self, target: int, delay: float) -> None:
        super().__init__(target)
        self.delay = delay

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        self._open |= {client_w, server_w}
        tasks = [
            asyncio.create_task(self._pipe(client_r, server_w)),
            asyncio.create_task(self._pipe(server_r, client_w)),
        ]
        with contextlib.suppress(ConnectionError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()
            self._open.discard(writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        late: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await late.get()
                if data == b"":
                    return  # the other side closed: so does this one, as late
                await asyncio.sleep(max(0.0, due - loop.time()))  # (the latency itself)
                writer.write(data)

        delivering = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                late.put_nowait((loop.time() + self.delay, data))
            late.put_nowait((loop.time() + self.delay, b""))
            await delivering
        finally:
            delivering.cancel()
