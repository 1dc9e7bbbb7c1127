"""The store's hot statements run straight on the async driver's connection.

SQLAlchemy builds every statement (Core, once per store) and compiles it once for the engine's
dialect; the connection comes from, and goes back to, the engine's own pool, so pool settings,
``connect``/``checkout`` events and ``pool_pre_ping`` all apply. What is skipped is
SQLAlchemy's per-statement execution path (a greenlet switch, an execution context, a
``CursorResult``) and, on aiosqlite, the extra hops to the driver's thread that its cursor
adapter makes: together most of the cost of a one-round-trip operation (docs/performance.md).

Driver errors are translated and wrapped exactly as SQLAlchemy would (``DBAPIError`` with
``connection_invalidated``), and a lost connection is invalidated in the pool, so the store's
retry rules see the same exceptions on both paths. The store takes this path only while the
engine has no statement or transaction event listeners and is not logging SQL; otherwise
(``echo``, OpenTelemetry-style instrumentation, tests injecting faults) it uses
``AsyncConnection.execute`` so that every statement is seen.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError, MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import Pool, QueuePool, StaticPool
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

_RESET_NONE: Any
try:  # what a pool made with pool_reset_on_return=None holds; private to SQLAlchemy
    from sqlalchemy.pool.base import reset_none as _RESET_NONE  # noqa: N812
except ImportError:  # pragma: no cover - a SQLAlchemy that moved it: always use the greenlet
    _RESET_NONE = None

T = TypeVar("T")
#: Engine events a statement run on the driver would not fire.
_STATEMENT_EVENTS = (
    "before_cursor_execute",
    "after_cursor_execute",
    "before_execute",
    "after_execute",
    "begin",
    "commit",
    "rollback",
)


@dataclass(frozen=True, slots=True)
class Statement:
    """A Core statement and, where it needs no type processing, its SQL for the driver.

    ``sources`` gives, per positional parameter, the caller's parameter name or, for a value
    fixed in the statement (``LIMIT 1``), that value. ``modifies`` marks statements that change
    rows: on drivers whose single-statement writes commit by themselves, sending one is the
    commit point.
    """

    core: Executable
    sql: str | None
    sources: tuple[tuple[str | None, Any], ...]
    modifies: bool = False

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(value if name is None else params[name] for name, value in self.sources)


def prepare(core: Executable, dialect: Dialect, *, modifies: bool = False) -> Statement:
    """Compile ``core`` for ``dialect`` once; keep the SQL only if the driver can run it as is.

    A bind that SQLAlchemy would convert on the way (other than a list for an array of plain
    text), or SQL completed at execution time, leaves the statement on SQLAlchemy's path.
    """
    assert isinstance(core, ClauseElement)
    compiled = core.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    names = tuple(compiled.positiontup or ())
    sources: list[tuple[str | None, Any]] = []
    runnable = compiled.positional and "POSTCOMPILE" not in compiled.string
    for name in names:
        bind = compiled.binds[name]
        runnable = runnable and not _converted(bind.type, dialect)
        sources.append((name, None) if bind.required else (None, bind.effective_value))
    return Statement(core, compiled.string if runnable else None, tuple(sources), modifies)


def _converted(type_: Any, dialect: Dialect) -> bool:
    """True when SQLAlchemy would change a value of ``type_`` before the driver sees it."""
    if type_.bind_processor(dialect) is None:
        return False
    # An array of a type without processing only copies the list it is given.
    item = getattr(type_, "item_type", None)
    return item is None or _converted(item, dialect)


class Driver:
    """How to run a compiled statement on one async driver's own connection."""

    names: ClassVar[tuple[str, ...]] = ()
    #: A statement outside a transaction commits by itself (no BEGIN/COMMIT round trips).
    autocommit: ClassVar[bool] = False
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


class _Asyncpg(Driver):
    """asyncpg: statements prepared once per connection by asyncpg; one round trip each."""

    names = ("asyncpg",)
    autocommit = True  # asyncpg sends no BEGIN unless asked; a lone statement commits itself
    settles_cancelled = True

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

    async def run_many(self, conn: Any, sql: str, args: list[tuple[Any, ...]]) -> None:
        # aiomysql sends an executemany of INSERT ... VALUES as one multi-row INSERT.
        async with conn.cursor() as cursor:
            await cursor.executemany(sql, args)

    def is_closed(self, conn: Any) -> bool:
        return bool(conn.closed)

    def in_transaction(self, conn: Any) -> bool:
        # The server reports it only on OK packets, not after a result set: see reads_begin.
        return bool(conn.get_transaction_status())


_DRIVERS: dict[str, Driver] = {
    name: driver for driver in (_Asyncpg(), _Aiosqlite(), _Aiomysql()) for name in driver.names
}


def driver_for(dialect: Dialect) -> Driver | None:
    """The driver runner for ``dialect``, or None when statements must go through SQLAlchemy."""
    return _DRIVERS.get(dialect.driver)


def observed(engine: Engine) -> bool:
    """True while something would miss statements run on the driver: listeners or SQL logs."""
    # SQLAlchemy's own gate: set when a listener is first added (and never cleared), so
    # the common case, an engine nobody ever listened to, is one attribute each.
    if getattr(engine, "_has_events", True) or getattr(engine.dialect, "_has_events", True):
        dispatch = engine.dispatch
        if any(getattr(dispatch, name) for name in _STATEMENT_EVENTS):
            return True
        if engine.dialect.dispatch.handle_error:  # error hooks see only SQLAlchemy's runs
            return True
    # The engine's own logger: echo, or logging configured for it (or its logging_name).
    return bool(engine.echo) or engine.logger.isEnabledFor(logging.INFO)


class ConnectionLostBeforeSendingError(Exception):
    """The driver's connection was closed before a statement was sent: nothing ran."""


class Link:
    """One pooled connection used through its driver, for one store operation.

    ``committing`` turns true once a change may have been committed: before COMMIT is sent,
    or, on autocommit drivers, before a modifying statement is sent.
    """

    __slots__ = (
        "_dialect",
        "_driver",
        "_fairy",
        "_pending",
        "_reads_begin",
        "autocommit",
        "committing",
        "conn",
        "lost",
    )

    def __init__(
        self,
        driver: Driver,
        dialect: Dialect,
        fairy: Any,
        autocommit: bool,
        reads_begin: bool | None = None,
    ) -> None:
        self._driver = driver
        self._dialect = dialect
        self._fairy = fairy
        self.conn = fairy.driver_connection
        self.committing = False
        self.lost: BaseException | None = None
        self.autocommit = autocommit
        self._pending = False  # a statement was sent since the last COMMIT or ROLLBACK
        self._reads_begin = driver.reads_begin if reads_begin is None else reads_begin

    async def rows(self, stmt: Statement, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        assert stmt.sql is not None
        args = stmt.args(params)
        self._before(stmt)
        try:
            return await self._driver.rows(self.conn, stmt.sql, args)
        except Exception as exc:
            raise self._wrap(exc, stmt.sql, args) from exc

    async def run(
        self, stmt: Statement, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> None:
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
        if self.autocommit and stmt.modifies:
            self.committing = True
        self._pending = True

    async def commit(self) -> None:
        self.committing = True
        try:
            await self._driver.commit(self.conn)
        except Exception as exc:
            raise self._wrap(exc, "COMMIT", ()) from exc
        self._pending = False

    async def settle(self) -> bool:
        """After a cancellation: wait until the server is done with this link's statements.

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
        """Commit a transaction opened before this link got the connection (in the greenlet)."""
        try:
            self._fairy.dbapi_connection.commit()
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
            raise self._wrap(cause, "COMMIT", ()) from exc

    async def rollback(self) -> None:
        try:
            await self._driver.rollback(self.conn)
        except Exception as exc:
            raise self._wrap(exc, "ROLLBACK", ()) from exc
        self._pending = False

    def _wrap(
        self, exc: Exception, sql: str, args: Any, *, lost: bool = False
    ) -> DBAPIError | Exception:
        """``exc`` as SQLAlchemy would raise it: translated to the DBAPI's class, wrapped."""
        dialect = self._dialect
        adapted = self._fairy.dbapi_connection
        translated: Exception = exc
        if not lost:
            try:
                adapted._handle_exception(exc)  # raises the DBAPI-style exception
            except Exception as dbapi_error:
                translated = dbapi_error
        error_class = dialect.loaded_dbapi.Error
        if not isinstance(translated, error_class):
            translated = dialect.loaded_dbapi.OperationalError(str(exc))
            translated.__cause__ = exc
        invalidated = lost or dialect.is_disconnect(translated, adapted, None)
        if invalidated:
            self.lost = translated
        wrapped = DBAPIError.instance(
            sql,
            args,
            translated,
            error_class,
            connection_invalidated=invalidated,
            dialect=dialect,
        )
        return wrapped

    async def within(self, body: Callable[[Link], Awaitable[T]], commit: bool) -> T:
        """Run ``body`` on this link, then COMMIT (``commit``) or end any open transaction."""
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
        driver = self._driver
        return self._pending and (self._reads_begin or driver.in_transaction(self.conn))

    def release(self, interrupted: bool) -> None:
        """Return the connection to the pool, or discard it if lost or interrupted.

        Runs in SQLAlchemy's greenlet, where the pool may wait on the event loop, unless the
        pool is quick (see :func:`quick_pool`) and the connection is simply put back.
        """
        fairy = self._fairy
        if self.lost is not None:
            # As SQLAlchemy does on a disconnect: every connection of the pool made before
            # this one is presumed gone too (a server restart) and is replaced at checkout.
            fairy._pool._invalidate(fairy, self.lost)
        elif interrupted:
            # Interrupted mid-statement (cancelled): its protocol state is unknown.
            fairy.invalidate()
        fairy.close()


class CoreLink:
    """The same interface as :class:`Link`, through SQLAlchemy's ``AsyncConnection``."""

    __slots__ = ("committing", "conn")

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.committing = False

    async def rows(self, stmt: Statement, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        return (await self.conn.execute(stmt.core, params)).all()

    async def run(
        self, stmt: Statement, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> None:
        await self.conn.execute(stmt.core, params)


def quick_pool(pool: Pool) -> bool:
    """True when taking an idle connection from ``pool`` and returning it needs no I/O.

    That is: no pre-ping, no recycling by age, no disconnect seen yet (which makes the pool
    replace older connections at checkout), no reset on return, and no checkout/checkin/reset
    listeners; and a pool that keeps its connections (QueuePool, StaticPool). Then checking
    an idle connection out, and back in while the pool has room for it, runs outside
    SQLAlchemy's greenlet, which costs ~30 us per operation; everything else (connecting,
    closing an overflow connection, discarding a lost one) still runs in the greenlet.
    """
    settled = _QUICK_BY_SETTINGS.get(pool)
    if settled is None:  # what cannot change after the pool is made, looked at once
        settled = _QUICK_BY_SETTINGS[pool] = (
            _RESET_NONE is not None
            and isinstance(pool, (QueuePool, StaticPool))
            and getattr(pool, "_pre_ping", True) is False
            and getattr(pool, "_recycle", 0) < 0
            and getattr(pool, "_reset_on_return", None) is _RESET_NONE
        )
    return (
        settled
        and getattr(pool, "_invalidate_time", 1) == 0
        and not pool.dispatch.checkout
        and not pool.dispatch.checkin
        and not pool.dispatch.reset
    )


_QUICK_BY_SETTINGS: weakref.WeakKeyDictionary[Pool, bool] = weakref.WeakKeyDictionary()


def _has_idle(pool: Pool) -> bool:
    """An idle connection waits in ``pool`` (StaticPool: its one connection, always)."""
    return not isinstance(pool, QueuePool) or pool.checkedin() > 0


def _has_room(pool: Pool) -> bool:
    """A connection given back is kept, not closed (past ``pool_size`` it is closed: I/O)."""
    return not isinstance(pool, QueuePool) or pool.checkedin() < pool.size()


async def run_on_pool(
    pool: Pool,
    cannot_connect: Callable[[Exception], Exception],
    driver: Driver,
    dialect: Dialect,
    body: Callable[[Link], Awaitable[T]],
    *,
    autocommit: bool,
    commit: bool,
    pool_autocommit: bool = False,
) -> T:
    """Check a connection out of ``pool``, run ``body`` on it, and return it.

    ``pool_autocommit``: the pool's connections are in the driver's autocommit mode, so even
    on a driver whose reads begin a transaction there is nothing to end after a read.
    """
    quick = quick_pool(pool)
    fairy: Any = None
    try:
        if quick and _has_idle(pool):
            # An idle connection that must be replaced (invalidated): the pool reconnects,
            # in its greenlet (below).
            with suppress(MissingGreenlet):
                fairy = pool.connect()
        if fairy is None:
            fairy = await greenlet_spawn(pool.connect)
    except Exception as exc:  # the pool raises the driver's own errors, unwrapped
        raise cannot_connect(exc) from exc
    link = Link(driver, dialect, fairy, autocommit, False if pool_autocommit else None)
    interrupted = False
    try:
        if driver.in_transaction(link.conn):
            # A pool ``connect``/``checkout`` listener ran a statement, which opened a
            # transaction; SQLAlchemy's path would commit it with ours, so commit it first.
            await greenlet_spawn(link.commit_foreign)
        return await link.within(body, commit)
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)
        if interrupted and driver.settles_cancelled and link.lost is None:
            # Cancelled: what was sent has committed or not, for good, before the caller
            # sees CancelledError, and the connection stays (for SQLite :memory:, discarding
            # it would discard the database).
            interrupted = not await link.settle()
        raise
    finally:
        if quick and link.lost is None and not interrupted and _has_room(pool):
            link.release(interrupted=False)
        elif interrupted:
            # Cancelled: discard the connection even if cancelled again while doing so.
            await asyncio.shield(greenlet_spawn(link.release, True))
        else:
            await greenlet_spawn(link.release, False)
