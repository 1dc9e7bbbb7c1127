"""Killing a store's own server connections, from outside, at chosen moments.

Every connection the store opens reports its server-side id (``pg_backend_pid()`` or
``CONNECTION_ID()``) into ``conn.info``, and only those ids are ever killed, through a separate
admin connection, so no other session on a shared server is touched.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.util import await_only

from agent_session_store import SessionStore

_SERVER_ID = "reliability_server_id"


class ConnectionKiller:
    """Kills connections of one store's engine: on demand, or inside a chosen statement."""

    def __init__(self, store: SessionStore, admin_url: str) -> None:
        self.engine = store.engine
        self.postgres = self.engine.dialect.name == "postgresql"
        self.admin: AsyncEngine = create_async_engine(admin_url, poolclass=NullPool)
        self.ids: set[int] = set()
        self.kills = 0
        # Every pool of the store: on MySQL/MariaDB the reads have an autocommit pool of their own.
        read_engine = getattr(store, "_read_engine", None)
        for engine in [self.engine] + ([read_engine] if read_engine is not None else []):
            event.listen(engine.sync_engine, "connect", self._on_connect)
            # The pool replaces every connection after a disconnect: forget the ones it closes.
            event.listen(engine.sync_engine.pool, "close", self._on_close)

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT pg_backend_pid()" if self.postgres else "SELECT CONNECTION_ID()")
        server_id = int(cursor.fetchone()[0])
        cursor.close()
        record.info[_SERVER_ID] = server_id
        self.ids.add(server_id)

    def _on_close(self, dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            self.ids.discard(record.info.get(_SERVER_ID))

    async def kill(self, server_id: int, wait: bool = True) -> bool:
        """Kill one of the store's connections; with ``wait``, until the server dropped it."""
        if server_id not in self.ids:
            raise ValueError(f"{server_id} is not a connection of this store")
        async with self.admin.connect() as conn:
            if self.postgres:
                # A timeout makes the call wait until the backend has exited (polled each 100ms).
                killed = (
                    await conn.execute(
                        text("SELECT pg_terminate_backend(:pid, :ms)"),
                        {"pid": server_id, "ms": 5000 if wait else 0},
                    )
                ).scalar()
            else:
                try:
                    await conn.execute(text("KILL CONNECTION :id"), {"id": server_id})
                    killed = True
                except Exception:  # already gone: "Unknown thread id"
                    killed = False
                query = text("SELECT COUNT(*) FROM information_schema.processlist WHERE id = :id")
                for _ in range(500 if wait else 0):
                    if not (await conn.execute(query, {"id": server_id})).scalar():
                        break
                    await asyncio.sleep(0.01)
        self.ids.discard(server_id)
        self.kills += bool(killed)
        return bool(killed)

    async def kill_all(self) -> int:
        """Kill every live connection of the store (idle in its pool or busy); return the count."""
        return sum([await self.kill(server_id) for server_id in sorted(self.ids)])

    def kill_inside(self, event_name: str, when: Any = None) -> None:
        """Kill the connection running the store's call at engine event ``event_name``, once.

        ``before_cursor_execute`` events are filtered by ``when(statement)``; the ``commit``
        event fires just before COMMIT is sent, so the server never receives it.
        """
        state = {"armed": True}

        def fire(conn: Any, *args: Any) -> None:
            if not state["armed"] or (when is not None and not when(args[1])):
                return
            state["armed"] = False
            # The listener runs inside SQLAlchemy's greenlet: it may wait on the event loop.
            await_only(self.kill(conn.info[_SERVER_ID]))

        event.listen(self.engine.sync_engine, event_name, fire)
        self._listener = (event_name, fire)

    def disarm(self) -> None:
        """Remove the listener set by :meth:`kill_inside`."""
        name, fire = self._listener
        event.remove(self.engine.sync_engine, name, fire)

    async def close(self) -> None:
        """Dispose the admin engine."""
        await self.admin.dispose()
