"""The driver executor's runner: compiled statements sent straight to the async driver.

SQLAlchemy builds every statement (Core, once per store) and compiles it once for the engine's
dialect (``_statements``); the connection comes from, and goes back to, the engine's own pool,
so pool settings, ``connect``/``checkout`` events and ``pool_pre_ping`` all apply. What is
skipped is SQLAlchemy's per-statement execution path (a greenlet switch, an execution context,
a ``CursorResult``) and, on aiosqlite, the extra hops to the driver's thread that its cursor
adapter makes: together most of the cost of a one-round-trip operation (docs/performance.md).

Driver errors are raised as SQLAlchemy would raise them (``DBAPIError`` with
``connection_invalidated``), and a lost connection is invalidated in the pool, so the store's
retry rules see the same exceptions on both executors. Whether an engine may use this path at
all is decided by ``_probe``; every SQLAlchemy internal read here goes through ``_internals``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any, ClassVar, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, MissingGreenlet
from sqlalchemy.pool import Pool, QueuePool, StaticPool
from sqlalchemy.util import greenlet_spawn

from agent_session_store import _internals
from agent_session_store._statements import Statement

T = TypeVar("T")


class Driver:
    """How to run a compiled statement on one async driver's own connection."""

    names: ClassVar[tuple[str, ...]] = ()
    #: A lone statement outside a transaction commits by itself (asyncpg: no BEGIN/COMMIT
    #: round trips), so single-statement writes run without a transaction block.
    lone_statement_commits: ClassVar[bool] = False
    #: After a cancelled call, :meth:`settle` can wait until the server is done with what
    #: it was sent, leaving the connection usable; otherwise the connection is discarded.
    settles_cancelled: ClassVar[bool] = False
    #: Any statement, a read too, starts a transaction that must be ended before the
    #: connection goes back to the pool (``in_transaction`` cannot always tell).
    reads_begin: ClassVar[bool] = False

    async def rows(self, conn: Any, sql: str, args: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    async def run(self, conn: Any, sql: str, args: tuple[Any, ...]) -> None:
        raise NotImplementedError

    async def run_many(self, conn: Any, sql: str, args: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    async def insert_id(self, conn: Any, sql: str, args: tuple[Any, ...]) -> int:
        """Run one statement; the id the server reported with it (MySQL's LAST_INSERT_ID)."""
        raise NotImplementedError

    def pages(
        self, conn: Any, sql: str, args: tuple[Any, ...], size: int
    ) -> AsyncIterator[Sequence[Sequence[Any]]]:
        """The rows of one statement, ``size`` at a time, from a server-side cursor."""
        raise NotImplementedError

    async def settle(self, conn: Any) -> None:
        """After a cancellation: wait out what was sent, then end any open transaction."""
        raise NotImplementedError

    async def commit(self, conn: Any) -> None:
        await conn.commit()

    async def rollback(self, conn: Any) -> None:
        await conn.rollback()

    def is_closed(self, conn: Any) -> bool:
        return False

    def in_transaction(self, conn: Any) -> bool:
        raise NotImplementedError

    def as_dbapi_error(self, adapted: Any, error: Exception) -> Exception:
        """``error`` as the DBAPI-style exception SQLAlchemy's adapter would raise.

        aiosqlite and aiomysql raise their DBAPI module's own classes (``sqlite3.Error``,
        ``pymysql.err.Error``), which SQLAlchemy's adapters re-export unchanged: nothing to
        translate, and no adapter private to depend on.
        """
        return error


class _Asyncpg(Driver):
    """asyncpg: statements prepared once per connection by asyncpg; one round trip each."""

    names = ("asyncpg",)
    lone_statement_commits = True  # asyncpg sends no BEGIN unless asked
    settles_cancelled = True

    def as_dbapi_error(self, adapted: Any, error: Exception) -> Exception:
        # asyncpg's classes are translated by SQLSTATE into the adapter's DBAPI classes;
        # _probe checks that translation on each engine's first connection.
        return _internals.translate_asyncpg_error(adapted, error)

    async def settle(self, conn: Any) -> None:
        # asyncpg answers a cancelled query with a CancelRequest, and starts its next query
        # only once the server has acknowledged the cancelled one (ReadyForQuery): then the
        # statement has either committed or not, for good.
        await conn.execute("SELECT 1")
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")

    async def rows(self, conn: Any, sql: str, args: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        return await conn.fetch(sql, *args)  # type: ignore[no-any-return]

    async def run(self, conn: Any, sql: str, args: tuple[Any, ...]) -> None:
        await conn.execute(sql, *args)

    async def run_many(self, conn: Any, sql: str, args: list[tuple[Any, ...]]) -> None:
        await conn.executemany(sql, args)

    async def pages(
        self, conn: Any, sql: str, args: tuple[Any, ...], size: int
    ) -> AsyncIterator[Sequence[Sequence[Any]]]:
        # asyncpg cursors live in a transaction; one statement, so one snapshot either way.
        async with conn.transaction(readonly=True):
            cursor = await conn.cursor(sql, *args)
            while rows := await cursor.fetch(size):
                yield rows

    def is_closed(self, conn: Any) -> bool:
        return bool(conn.is_closed())

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.is_in_transaction())


class _Aiosqlite(Driver):
    """aiosqlite: one hop to the driver's thread per statement.

    The cursor is made and dropped in that thread; sqlite3 opens the transaction itself before
    the first write.
    """

    names = ("aiosqlite",)
    settles_cancelled = True

    async def settle(self, conn: Any) -> None:
        # Its thread runs each queued request to the end, in order: a ROLLBACK queued now
        # runs after what the cancelled call sent (undoing it, unless COMMIT went first).
        await conn.rollback()

    async def rows(self, conn: Any, sql: str, args: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        return await conn.execute_fetchall(sql, args)  # type: ignore[no-any-return]

    async def run(self, conn: Any, sql: str, args: tuple[Any, ...]) -> None:
        await conn.execute_fetchall(sql, args)

    async def run_many(self, conn: Any, sql: str, args: list[tuple[Any, ...]]) -> None:
        await conn.executemany(sql, args)

    async def pages(
        self, conn: Any, sql: str, args: tuple[Any, ...], size: int
    ) -> AsyncIterator[Sequence[Sequence[Any]]]:
        async with conn.execute(sql, args) as cursor:
            while rows := await cursor.fetchmany(size):
                yield rows

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.in_transaction)


class _Aiomysql(Driver):
    """aiomysql, with autocommit off as SQLAlchemy keeps it.

    The first statement opens the transaction (no BEGIN round trip), so a read is ended with
    ROLLBACK.
    """

    names = ("aiomysql",)
    reads_begin = True

    async def rows(self, conn: Any, sql: str, args: tuple[Any, ...]) -> Sequence[Sequence[Any]]:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, args)
            return await cursor.fetchall()  # type: ignore[no-any-return]

    async def run(self, conn: Any, sql: str, args: tuple[Any, ...]) -> None:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, args)

    async def insert_id(self, conn: Any, sql: str, args: tuple[Any, ...]) -> int:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, args)
            return int(cursor.lastrowid or 0)

    async def run_many(self, conn: Any, sql: str, args: list[tuple[Any, ...]]) -> None:
        # aiomysql sends an executemany of INSERT ... VALUES as one multi-row INSERT.
        async with conn.cursor() as cursor:
            await cursor.executemany(sql, args)

    async def pages(
        self, conn: Any, sql: str, args: tuple[Any, ...], size: int
    ) -> AsyncIterator[Sequence[Sequence[Any]]]:
        from aiomysql import SSCursor  # type: ignore[import-untyped]

        async with conn.cursor(SSCursor) as cursor:
            await cursor.execute(sql, args)
            while rows := await cursor.fetchmany(size):
                yield rows

    def is_closed(self, conn: Any) -> bool:
        return bool(conn.closed)

    def in_transaction(self, conn: Any) -> bool:
        # The server reports it only on OK packets, not after a result set: see reads_begin.
        return bool(conn.get_transaction_status())


_DRIVERS: dict[str, Driver] = {
    name: driver for driver in (_Asyncpg(), _Aiosqlite(), _Aiomysql()) for name in driver.names
}


def driver_for(dialect: Dialect) -> Driver | None:
    """How to run statements on ``dialect``'s driver; None for a driver we do not know."""
    return _DRIVERS.get(dialect.driver)


class ConnectionLostBeforeSendingError(Exception):
    """The driver's connection was closed before a statement was sent: nothing ran."""


class DriverRunner:
    """One pooled connection used through its driver, for one operation (a ``Runner``).

    ``committing`` turns true once a change may have been committed: before COMMIT is sent,
    or, where a lone statement commits by itself, before a modifying statement is sent.
    """

    __slots__ = (
        "_dialect",
        "_driver",
        "_fairy",
        "_pending",
        "_reads_end_themselves",
        "commits_each_statement",
        "committing",
        "conn",
        "lost",
    )

    def __init__(
        self,
        driver: Driver,
        dialect: Dialect,
        fairy: Any,
        *,
        commits_each_statement: bool,
        reads_end_themselves: bool,
    ) -> None:
        self._driver = driver
        self._dialect = dialect
        self._fairy = fairy
        self.conn = fairy.driver_connection
        self.committing = False
        self.lost: BaseException | None = None
        self.commits_each_statement = commits_each_statement
        self._pending = False  # a statement was sent since the last COMMIT or ROLLBACK
        self._reads_end_themselves = reads_end_themselves

    async def rows(self, stmt: Statement, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Run ``stmt`` and return all its rows."""
        assert stmt.sql is not None
        args = stmt.args(params)
        self._before(stmt)
        try:
            return await self._driver.rows(self.conn, stmt.sql, args)
        except Exception as exc:
            raise self._wrap(exc, stmt.sql, args) from exc

    async def pages(
        self, stmt: Statement, params: Mapping[str, Any], size: int
    ) -> AsyncIterator[Sequence[Sequence[Any]]]:
        """Run ``stmt`` and yield its rows ``size`` at a time (a server-side cursor)."""
        assert stmt.sql is not None
        args = stmt.args(params)
        self._before(stmt)
        try:
            async for page in self._driver.pages(self.conn, stmt.sql, args, size):
                yield page
        except Exception as exc:
            raise self._wrap(exc, stmt.sql, args) from exc

    async def insert_id(self, stmt: Statement, params: Mapping[str, Any]) -> int:
        """Run ``stmt`` and return the id the server reported with it (MySQL/MariaDB)."""
        assert stmt.sql is not None
        args = stmt.args(params)
        self._before(stmt)
        try:
            return await self._driver.insert_id(self.conn, stmt.sql, args)
        except Exception as exc:
            raise self._wrap(exc, stmt.sql, args) from exc

    async def run(
        self, stmt: Statement, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> None:
        """Run ``stmt`` once, or once per parameter set (an executemany)."""
        assert stmt.sql is not None
        self._before(stmt)
        if isinstance(params, Mapping):
            args = stmt.args(params)
            try:
                await self._driver.run(self.conn, stmt.sql, args)
            except Exception as exc:
                raise self._wrap(exc, stmt.sql, args) from exc
            return
        many = [stmt.args(p) for p in params]
        try:
            await self._driver.run_many(self.conn, stmt.sql, many)
        except Exception as exc:
            raise self._wrap(exc, stmt.sql, many) from exc

    def _before(self, stmt: Statement) -> None:
        if self._driver.is_closed(self.conn):
            # Closed by the server while idle in the pool: nothing of this call was sent yet.
            exc = ConnectionLostBeforeSendingError("the connection was closed before use")
            raise self._wrap(exc, stmt.sql or "", (), lost=True) from None
        if self.commits_each_statement and stmt.modifies:
            self.committing = True
        self._pending = True

    async def commit(self) -> None:
        """COMMIT the transaction the first statement opened."""
        self.committing = True
        try:
            await self._driver.commit(self.conn)
        except Exception as exc:
            raise self._wrap(exc, "COMMIT", ()) from exc
        self._pending = False

    async def settle(self) -> bool:
        """After a cancellation: wait until the server is done with this runner's statements.

        True when the connection is known good afterwards. Runs to its end even if the
        caller is cancelled again meanwhile.
        """
        if not self._pending:
            return True
        task = asyncio.ensure_future(self._driver.settle(self.conn))
        while not task.done():
            with suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        self._pending = False
        return not task.cancelled() and task.exception() is None

    def commit_foreign(self) -> None:
        """Commit a transaction opened before this runner got the connection (in the greenlet)."""
        try:
            self._fairy.dbapi_connection.commit()
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
            raise self._wrap(cause, "COMMIT", ()) from exc

    async def rollback(self) -> None:
        """ROLLBACK whatever is open."""
        try:
            await self._driver.rollback(self.conn)
        except Exception as exc:
            raise self._wrap(exc, "ROLLBACK", ()) from exc
        self._pending = False

    def _wrap(
        self, exc: Exception, sql: str, args: Any, *, lost: bool = False
    ) -> DBAPIError | Exception:
        """``exc`` as SQLAlchemy would raise it: the DBAPI's class, wrapped in ``DBAPIError``."""
        dialect = self._dialect
        adapted = self._fairy.dbapi_connection
        translated = exc if lost else self._driver.as_dbapi_error(adapted, exc)
        error_class = dialect.loaded_dbapi.Error
        if not isinstance(translated, error_class):
            translated = dialect.loaded_dbapi.OperationalError(str(exc))
            translated.__cause__ = exc
        invalidated = lost or dialect.is_disconnect(translated, adapted, None)
        if invalidated:
            self.lost = translated
        return DBAPIError.instance(
            sql,
            args,
            translated,
            error_class,
            connection_invalidated=invalidated,
            dialect=dialect,
        )

    async def within(self, body: Callable[[DriverRunner], Awaitable[T]], commit: bool) -> T:
        """Run ``body`` on this runner, then COMMIT (``commit``) or end any open transaction."""
        try:
            result = await body(self)
            if commit:
                await self.commit()
            elif self._open():
                await self.rollback()  # a read on a driver whose reads begin a transaction
            return result
        except Exception:
            if self.lost is None and self._open():
                # If this fails too, the connection is lost (marked by _wrap) and discarded.
                with suppress(DBAPIError):
                    await self.rollback()
            raise

    def _open(self) -> bool:
        if not self._pending:
            return False
        if self._driver.reads_begin and not self._reads_end_themselves:
            return True
        return self._driver.in_transaction(self.conn)

    def release(self, interrupted: bool) -> None:
        """Return the connection to the pool, or discard it if lost or interrupted.

        Runs in SQLAlchemy's greenlet, where the pool may wait on the event loop, unless the
        pool is quick (see :func:`quick_pool`) and the connection is simply put back.
        """
        fairy = self._fairy
        if self.lost is not None:
            # As SQLAlchemy does on a disconnect: every connection of the pool made before
            # this one is presumed gone too (a server restart) and is replaced at checkout.
            _internals.invalidate_pool_since(fairy, self.lost)
        elif interrupted:
            # Interrupted mid-statement (cancelled): its protocol state is unknown.
            fairy.invalidate()
        fairy.close()


def quick_pool(pool: Pool) -> bool:
    """True when taking an idle connection from ``pool`` and returning it needs no I/O.

    That is: a pool that keeps its connections (QueuePool, StaticPool), no pre-ping, no
    recycling by age, no reset on return, no disconnect seen yet, and no
    checkout/checkin/reset listeners. Then checking an idle connection out, and back in while
    the pool has room for it, runs outside SQLAlchemy's greenlet, which costs ~30 us per
    operation; everything else (connecting, closing an overflow connection, discarding a lost
    one) still runs in the greenlet.
    """
    return (
        isinstance(pool, (QueuePool, StaticPool))
        and not _internals.pool_needs_io_per_checkout(pool)
        and not pool.dispatch.checkout
        and not pool.dispatch.checkin
        and not pool.dispatch.reset
    )


def _has_idle(pool: Pool) -> bool:
    """An idle connection waits in ``pool`` (StaticPool: its one connection, always)."""
    return not isinstance(pool, QueuePool) or pool.checkedin() > 0


def _has_room(pool: Pool) -> bool:
    """A connection given back is kept, not closed (past ``pool_size`` it is closed: I/O)."""
    return not isinstance(pool, QueuePool) or pool.checkedin() < pool.size()


async def checkout(pool: Pool, quick: bool) -> Any:
    """A connection of ``pool`` (its ``PoolProxiedConnection``); the pool's errors unwrapped."""
    if quick and _has_idle(pool):
        # An idle connection that must be replaced (invalidated): the pool reconnects,
        # in its greenlet (below).
        with suppress(MissingGreenlet):
            return pool.connect()
    return await greenlet_spawn(pool.connect)


async def run_on_pool(
    pool: Pool,
    driver: Driver,
    dialect: Dialect,
    body: Callable[[DriverRunner], Awaitable[T]],
    *,
    fairy: Any,
    commit: bool,
    reads_end_themselves: bool = False,
) -> T:
    """Run ``body`` on ``fairy`` (checked out of ``pool``), then give it back.

    ``commit``: COMMIT when ``body`` returns (else a lone statement commits by itself, or a
    read ends its transaction). ``reads_end_themselves``: the pool's connections are in the
    driver's autocommit mode, so even on a driver whose reads begin a transaction there is
    nothing to end after a read.
    """
    quick = quick_pool(pool)
    runner = DriverRunner(
        driver,
        dialect,
        fairy,
        commits_each_statement=not commit and driver.lone_statement_commits,
        reads_end_themselves=reads_end_themselves,
    )
    interrupted = False
    try:
        if driver.in_transaction(runner.conn):
            # A pool ``connect``/``checkout`` listener ran a statement, which opened a
            # transaction; SQLAlchemy's path would commit it with ours, so commit it first.
            await greenlet_spawn(runner.commit_foreign)
        return await runner.within(body, commit)
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        if interrupted and driver.settles_cancelled and runner.lost is None:
            # Cancelled: what was sent has committed or not, for good, before the caller
            # sees CancelledError, and the connection stays (for SQLite :memory:, discarding
            # it would discard the database).
            interrupted = not await runner.settle()
        raise
    finally:
        if quick and runner.lost is None and not interrupted and _has_room(pool):
            runner.release(interrupted=False)
        elif interrupted:
            # Cancelled: discard the connection even if cancelled again while doing so.
            await asyncio.shield(greenlet_spawn(runner.release, True))
        else:
            await greenlet_spawn(runner.release, False)
