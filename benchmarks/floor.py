"""The raw-driver floor: the store's operations written straight on each async driver.

Same schema (this package's models, created by the benchmark), same JSON codec (this package's,
so that a faster codec shows in neither ratio), same semantics as the store:
every write in one transaction that upserts the session row first, reads of one statement,
``pop`` as one ``DELETE ... RETURNING`` (or a locked ``SELECT`` + ``DELETE`` on MariaDB), and
the same SQLite pragmas. Each operation uses the fewest round trips the driver's public API
allows for that shape, with statements prepared once per connection by the driver.

The SQL names the floor's own fixed tables; nothing is interpolated.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from agent_session_store._dialect import SQLITE_BUSY_TIMEOUT_MS
from agent_session_store._json import decode as _decode
from agent_session_store._json import encode as _encode

SESSIONS_TABLE = "bench_floor_sessions"
MESSAGES_TABLE = "bench_floor_messages"
POOL_SIZE = 15  # connections kept open, the same for all three implementations


async def _no_reset(connection: Any) -> None:
    return None


class FloorSession:
    """One session id on a floor backend, with the Session-protocol methods the workloads use."""

    def __init__(self, backend: Any, session_id: str) -> None:
        self.session_id = session_id
        self._backend = backend

    async def get_items(self, limit: int | None = None) -> list[Any]:
        return await self._backend.get_items(self.session_id, limit)  # type: ignore[no-any-return]

    async def add_items(self, items: list[Any]) -> None:
        await self._backend.add_items(self.session_id, items)

    async def pop_item(self) -> Any | None:
        return await self._backend.pop_item(self.session_id)


class SqliteFloor:
    """aiosqlite: one hop to the connection's thread per statement; implicit BEGIN on writes."""

    SELECT_ALL = "SELECT message_data FROM bench_floor_messages WHERE session_id = ? ORDER BY id"
    SELECT_TAIL = (
        "SELECT message_data FROM bench_floor_messages WHERE session_id = ? "
        "ORDER BY id DESC LIMIT ?"
    )
    TOUCH = (
        "INSERT INTO bench_floor_sessions (session_id) VALUES (?) ON CONFLICT (session_id) "
        "DO UPDATE SET updated_at = strftime('%Y-%m-%d %H:%M:%f000', 'now')"
    )
    INSERT = "INSERT INTO bench_floor_messages (session_id, message_data) VALUES (?, ?)"
    POP = (
        "DELETE FROM bench_floor_messages WHERE id = (SELECT id FROM bench_floor_messages "
        "WHERE session_id = ? ORDER BY id DESC LIMIT 1) RETURNING message_data"
    )

    def __init__(self, path: str) -> None:
        self._path = path
        self._idle: asyncio.LifoQueue[Any] = asyncio.LifoQueue()
        self._opened = 0
        self._slots = asyncio.Semaphore(POOL_SIZE)
        # One writer at a time, queued in the process, as the store does on SQLite.
        self._writer = asyncio.Lock()

    async def _open(self) -> Any:
        import aiosqlite

        conn = await aiosqlite.connect(self._path)
        await conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS:d}")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        async with self._slots:
            conn = self._idle.get_nowait() if not self._idle.empty() else await self._open()
            try:
                yield conn
            finally:
                self._idle.put_nowait(conn)

    async def close(self) -> None:
        while not self._idle.empty():
            await self._idle.get_nowait().close()

    async def get_items(self, session_id: str, limit: int | None) -> list[Any]:
        async with self._conn() as conn:
            if limit is None:
                rows = await conn.execute_fetchall(self.SELECT_ALL, (session_id,))
                return [_decode(r[0]) for r in rows]
            rows = await conn.execute_fetchall(self.SELECT_TAIL, (session_id, limit))
            return [_decode(r[0]) for r in reversed(rows)]

    async def add_items(self, session_id: str, items: list[Any]) -> None:
        texts = [_encode(i) for i in items]
        async with self._writer, self._conn() as conn:
            try:
                await conn.execute(self.TOUCH, (session_id,))
                if len(texts) == 1:
                    await conn.execute(self.INSERT, (session_id, texts[0]))
                else:
                    await conn.executemany(self.INSERT, [(session_id, t) for t in texts])
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise

    async def pop_item(self, session_id: str) -> Any | None:
        async with self._writer, self._conn() as conn:
            try:
                rows = await conn.execute_fetchall(self.POP, (session_id,))
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
        return _decode(rows[0][0]) if rows else None


class PostgresFloor:
    """asyncpg: statements prepared and cached per connection; one round trip each."""

    SELECT_ALL = "SELECT message_data FROM bench_floor_messages WHERE session_id = $1 ORDER BY id"
    SELECT_TAIL = (
        "SELECT message_data FROM bench_floor_messages WHERE session_id = $1 "
        "ORDER BY id DESC LIMIT $2"
    )
    TOUCH = (
        "INSERT INTO bench_floor_sessions (session_id) VALUES ($1) ON CONFLICT (session_id) "
        "DO UPDATE SET updated_at = now()"
    )
    INSERT = "INSERT INTO bench_floor_messages (session_id, message_data) VALUES ($1, $2)"
    #: The upsert and the insert in one statement (one round trip), as the store does.
    APPEND = (
        "WITH touched AS (INSERT INTO bench_floor_sessions (session_id) VALUES ($1) "
        "ON CONFLICT (session_id) DO UPDATE SET updated_at = now() RETURNING session_id) "
        "INSERT INTO bench_floor_messages (session_id, message_data) "
        "SELECT touched.session_id, item.data FROM touched "
        "JOIN unnest($2::text[]) WITH ORDINALITY AS item(data, n) ON true ORDER BY item.n"
    )
    POP = (
        "DELETE FROM bench_floor_messages WHERE id = (SELECT id FROM bench_floor_messages "
        "WHERE session_id = $1 ORDER BY id DESC LIMIT 1) RETURNING message_data"
    )
    EXISTS = "SELECT 1 FROM bench_floor_messages WHERE session_id = $1 LIMIT 1"

    def __init__(self, url: str) -> None:
        self._dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._pool: Any = None

    async def start(self) -> None:
        import asyncpg

        # No reset query on release (asyncpg's default is a round trip per release): every
        # operation here ends its transaction, as the store's do.
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=POOL_SIZE, reset=_no_reset
        )

    async def close(self) -> None:
        await self._pool.close()

    async def get_items(self, session_id: str, limit: int | None) -> list[Any]:
        async with self._pool.acquire() as conn:
            if limit is None:
                rows = await conn.fetch(self.SELECT_ALL, session_id)
                return [_decode(r[0]) for r in rows]
            rows = await conn.fetch(self.SELECT_TAIL, session_id, limit)
            return [_decode(r[0]) for r in reversed(rows)]

    async def add_items(self, session_id: str, items: list[Any]) -> None:
        texts = [_encode(i) for i in items]
        async with self._pool.acquire() as conn:
            await conn.execute(self.APPEND, session_id, texts)

    async def pop_item(self, session_id: str) -> Any | None:
        async with self._pool.acquire() as conn:
            while True:
                # One statement is one transaction: the DELETE is the claim.
                text = await conn.fetchval(self.POP, session_id)
                if text is not None:
                    return _decode(text)
                if await conn.fetchval(self.EXISTS, session_id) is None:
                    return None


class MariadbFloor:
    """aiomysql: reads on autocommit connections (one round trip), writes on connections with
    autocommit off, whose first statement opens the transaction (no BEGIN round trip)."""

    SELECT_ALL = "SELECT message_data FROM bench_floor_messages WHERE session_id = %s ORDER BY id"
    SELECT_TAIL = (
        "SELECT message_data FROM bench_floor_messages WHERE session_id = %s "
        "ORDER BY id DESC LIMIT %s"
    )
    TOUCH = (
        "INSERT INTO bench_floor_sessions (session_id) VALUES (%s) "
        "ON DUPLICATE KEY UPDATE updated_at = UTC_TIMESTAMP(6)"
    )
    INSERT = "INSERT INTO bench_floor_messages (session_id, message_data) VALUES (%s, %s)"
    NEWEST = (
        "SELECT id, message_data FROM bench_floor_messages WHERE session_id = %s "
        "ORDER BY id DESC LIMIT 1 FOR UPDATE"
    )
    DELETE = "DELETE FROM bench_floor_messages WHERE id = %s"

    def __init__(self, url: str) -> None:
        self._url = urlsplit(url)
        self._pool: Any = None
        self._writers: Any = None

    async def start(self) -> None:
        import aiomysql

        u = self._url
        args = {
            "host": u.hostname or "127.0.0.1",
            "port": u.port or 3306,
            "user": u.username or "root",
            "password": u.password or "",
            "db": u.path.lstrip("/"),
            "charset": "utf8mb4",
            "minsize": 1,
            "maxsize": POOL_SIZE,
        }
        self._pool = await aiomysql.create_pool(autocommit=True, **args)
        self._writers = await aiomysql.create_pool(autocommit=False, **args)

    async def close(self) -> None:
        for pool in (self._pool, self._writers):
            pool.close()
            await pool.wait_closed()

    async def get_items(self, session_id: str, limit: int | None) -> list[Any]:
        async with self._pool.acquire() as conn, conn.cursor() as cur:
            if limit is None:
                await cur.execute(self.SELECT_ALL, (session_id,))
                return [_decode(r[0]) for r in await cur.fetchall()]
            await cur.execute(self.SELECT_TAIL, (session_id, limit))
            return [_decode(r[0]) for r in reversed(await cur.fetchall())]

    async def add_items(self, session_id: str, items: list[Any]) -> None:
        texts = [_encode(i) for i in items]
        async with self._writers.acquire() as conn, conn.cursor() as cur:
            try:
                await cur.execute(self.TOUCH, (session_id,))
                # aiomysql turns executemany of an INSERT ... VALUES into one multi-row INSERT.
                await cur.executemany(self.INSERT, [(session_id, t) for t in texts])
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise

    async def pop_item(self, session_id: str) -> Any | None:
        async with self._writers.acquire() as conn, conn.cursor() as cur:
            try:
                await cur.execute(self.NEWEST, (session_id,))
                row = await cur.fetchone()
                if row is not None:
                    await cur.execute(self.DELETE, (row[0],))
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
        return None if row is None else _decode(row[1])
