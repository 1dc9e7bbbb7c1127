"""A TCP proxy on loopback that cuts a database connection at a chosen point of its protocol.

The store connects to the proxy, which relays bytes to the real server. Armed, it cuts the
connection it sees the chosen bytes on, closing both sides:

* ``arm_reply(pattern)``: the server's reply containing ``pattern`` is dropped. PostgreSQL
  answers ``INSERT 0 n`` for a lone statement, ``COMMIT`` for a COMMIT, only once it has
  committed: the write is stored, and the client never hears so.
* ``arm_reply_to(pattern)``: the reply to the client's request containing ``pattern`` (a
  MariaDB ``COMMIT``) is dropped once the server sent it: committed, never acknowledged.
* ``arm_request(pattern)``: the client's request containing ``pattern`` is dropped before
  the server gets it: never committed, and the client cannot tell.

Nothing is mocked: the server really commits (or never hears), the client's socket really
closes. Used with ``ssl=disable`` on PostgreSQL so the bytes are readable.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


@dataclass
class _Arm:
    kind: str  # "reply", "reply_to", "request"
    pattern: bytes


class CuttingProxy:
    """Relays loopback connections to ``host:port``; cuts one when armed."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.cuts = 0
        #: After the next cut, refuse every new connection (the server looks down).
        self.refuse_after_cut = False
        self._arm: _Arm | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on a free loopback port; return it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def arm_reply(self, pattern: bytes) -> None:
        self._arm = _Arm("reply", pattern)

    def arm_reply_to(self, pattern: bytes) -> None:
        self._arm = _Arm("reply_to", pattern)

    def arm_request(self, pattern: bytes) -> None:
        self._arm = _Arm("request", pattern)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.refuse_after_cut and self.cuts:
            client_w.close()
            return
        server_r, server_w = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), 10
        )
        cut = asyncio.Event()
        awaiting_reply = [False]

        async def pump(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool
        ) -> None:
            try:
                while not cut.is_set():
                    data = await reader.read(65536)
                    if not data:
                        break
                    arm = self._arm
                    if arm is not None and not cut.is_set():
                        if up and arm.kind == "request" and arm.pattern in data:
                            self._fire(cut)
                            break
                        if up and arm.kind == "reply_to" and arm.pattern in data:
                            awaiting_reply[0] = True
                        elif not up and (
                            (arm.kind == "reply" and arm.pattern in data)
                            or (arm.kind == "reply_to" and awaiting_reply[0])
                        ):
                            self._fire(cut)
                            break
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                cut.set()

        ups = asyncio.ensure_future(pump(client_r, server_w, True))
        downs = asyncio.ensure_future(pump(server_r, client_w, False))
        for task in (ups, downs):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await cut.wait()
        for writer in (client_w, server_w):
            writer.close()
        for task in (ups, downs):
            task.cancel()

    def _fire(self, cut: asyncio.Event) -> None:
        self._arm = None
        self.cuts += 1
        cut.set()
