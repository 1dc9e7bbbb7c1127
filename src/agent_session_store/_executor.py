"""The execution layer: how an operation's statements reach the database.

An operation is a function of a :class:`Runner` (``rows`` and ``run`` of a prepared
``Statement``). An executor gives it one: ``read`` for statements each atomic by itself,
``write`` for one transaction committed when the function returns. There are two executors,
with the same statements, results and errors:

* :class:`CoreExecutor`: SQLAlchemy's ``AsyncConnection`` (``CoreRunner``), which every event
  listener, execution option and log sees;
* :class:`DriverExecutor`: the same compiled SQL sent on the pool connection's driver
  connection (``_driver.DriverRunner``), taken only where ``_probe`` allows it.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from agent_session_store import _driver
from agent_session_store._probe import Probe
from agent_session_store._statements import Statement

T = TypeVar("T")


class Runner(Protocol):
    """What an operation runs its statements on, for the length of one read or write.

    ``committing`` is true once a change may have been committed (COMMIT sent, or a
    statement that commits by itself): a connection lost after that point leaves the
    outcome unknown.
    """

    committing: bool

    async def rows(self, stmt: Statement, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Run ``stmt`` and return its rows."""
        ...

    async def run(
        self, stmt: Statement, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> None:
        """Run ``stmt`` once, or once per parameter set."""
        ...

    def pages(
        self, stmt: Statement, params: Mapping[str, Any], size: int
    ) -> AsyncIterator[Sequence[Sequence[Any]]]:
        """Run ``stmt`` and yield its rows ``size`` at a time (a server-side cursor)."""
        ...

    async def insert_id(self, stmt: Statement, params: Mapping[str, Any]) -> int:
        """Run ``stmt`` and return the id the server reported with it (MySQL/MariaDB)."""
        ...


Operation = Callable[[Runner], Awaitable[T]]


class Executor(Protocol):
    """Runs operations: reads, and writes in one transaction each."""

    #: After a cancelled write, the executor waits until the server is done with it, so the
    #: caller may stop waiting at once; otherwise the write must be let run to its end.
    settles_cancelled: bool

    async def read(self, operation: Operation[T], *, cursor: bool = False) -> T:
        """Run ``operation``, whose statements are reads each atomic by itself.

        ``cursor``: it reads through a server-side cursor (``Runner.pages``).
        """
        ...

    async def write(self, operation: Operation[T]) -> T:
        """Run ``operation`` in one transaction, committed when it returns."""
        ...


class LoopLocks:
    """One ``asyncio.Lock`` per event loop (a lock is bound to the loop that waits on it)."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._locks = weakref.WeakKeyDictionary()

    def get(self) -> asyncio.Lock:
        """The running loop's lock."""
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock


class ThreadLock:
    """A lock for tasks of any event loop in any thread (one SQLite ``:memory:`` connection).

    Tasks of one loop queue on that loop's ``asyncio.Lock``; the one holding it then takes a
    thread lock, at once when no other thread holds it, else waiting in a worker thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_loop = LoopLocks()

    async def acquire(self) -> None:
        """Take the lock; if cancelled while waiting, it is given back once taken."""
        in_loop = self._in_loop.get()
        await in_loop.acquire()
        if self._lock.acquire(blocking=False):
            return
        waiting = asyncio.get_running_loop().run_in_executor(None, self._lock.acquire)
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            waiting.add_done_callback(lambda _done: self._lock.release())
            in_loop.release()
            raise

    def release(self) -> None:
        """Give the lock back (from the loop that took it)."""
        self._lock.release()
        self._in_loop.get().release()

    def get(self) -> ThreadLock:
        """The lock itself (the same interface as :class:`LoopLocks`)."""
        return self


class CoreRunner:
    """A :class:`Runner` over SQLAlchemy's ``AsyncConnection``."""

    __slots__ = ("committing", "conn")

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.committing = False

    async def rows(self, stmt: Statement, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Run ``stmt`` and return its rows."""
        return (await self.conn.execute(stmt.core, params)).all()

    async def run(
        self, stmt: Statement, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> None:
        """Run ``stmt`` once, or once per parameter set."""
        await self.conn.execute(stmt.core, params)

    async def insert_id(self, stmt: Statement, params: Mapping[str, Any]) -> int:
        """Run ``stmt`` and return the id the server reported with it (MySQL/MariaDB)."""
        return int((await self.conn.execute(stmt.core, params)).lastrowid or 0)

    async def pages(
        self, stmt: Statement, params: Mapping[str, Any], size: int
    ) -> AsyncIterator[Sequence[Sequence[Any]]]:
        """Run ``stmt`` and yield its rows ``size`` at a time (a server-side cursor)."""
        result = await self.conn.stream(stmt.core, params)
        async for page in result.partitions(size):
            yield page


class Gate(Protocol):
    """What every checkout passes first: the store is open, its schema checked."""

    async def __call__(self) -> None:
        """Raise if no statement may run now."""
        ...


class CoreExecutor:
    """Operations on SQLAlchemy's ``AsyncConnection``; also the admin operations' door."""

    settles_cancelled = False

    def __init__(
        self,
        engine: AsyncEngine,
        gate: Gate,
        cannot_connect: Callable[[BaseException], Exception],
        *,
        serial: ThreadLock | None,
        unbegun_reads: AsyncEngine | None,
    ) -> None:
        """``serial``: one connection shared by every task (SQLite ``:memory:``).

        ``unbegun_reads``: the engine in the driver's autocommit mode for reads, where that
        saves round trips (PostgreSQL: no BEGIN and ROLLBACK around one SELECT).
        """
        self.engine = engine
        self._gate = gate
        self._cannot_connect = cannot_connect
        self._serial = serial
        self._unbegun_reads = unbegun_reads

    async def read(self, operation: Operation[T], *, cursor: bool = False) -> T:
        """Run ``operation`` on a connection whose reads need no transaction of their own.

        With ``cursor``, on the engine itself: PostgreSQL keeps a server-side cursor only
        inside a transaction.
        """
        reads = self._unbegun_reads if self._serial is None and not cursor else None
        async with self.connect(reads) as conn:
            return await operation(CoreRunner(conn))

    async def write(self, operation: Operation[T]) -> T:
        """Run ``operation`` in ``BEGIN`` ... ``COMMIT``."""
        async with self.begin() as conn:
            runner = CoreRunner(conn)
            result = await operation(runner)
            runner.committing = True  # the COMMIT is sent as the block exits
        return result

    def connect(
        self, engine: AsyncEngine | None = None
    ) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection of the store's engine (or ``engine``), taken in turn if shared."""
        return self._connection(engine or self.engine, begin=False)

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection in a transaction, committed when the block exits without error."""
        return self._connection(self.engine, begin=True)

    @asynccontextmanager
    async def _connection(
        self, engine: AsyncEngine, *, begin: bool
    ) -> AsyncIterator[AsyncConnection]:
        await self._gate()
        lock = None if self._serial is None else self._serial.get()
        if lock is not None:
            await lock.acquire()
        try:
            conn = engine.connect()
            try:
                await conn.start()
            except Exception as exc:
                # SQLAlchemy 2.0 lets some drivers' connect errors through unwrapped
                # (asyncpg's InvalidPasswordError); 2.1 wraps them: either way, say it once.
                raise self._cannot_connect(exc) from exc
            try:
                if begin:
                    async with conn.begin():
                        yield conn
                else:
                    yield conn
            finally:
                await conn.close()
        finally:
            if lock is not None:
                lock.release()


class DriverExecutor:
    """Operations on the driver's own connection, checked out of the engine's pool."""

    def __init__(
        self,
        engine: AsyncEngine,
        driver: _driver.Driver,
        probe: Probe,
        gate: Gate,
        cannot_connect: Callable[[BaseException], Exception],
        *,
        serial: ThreadLock | None,
        unbegun_reads: AsyncEngine | None,
    ) -> None:
        """``unbegun_reads``: a second engine for reads, in autocommit mode.

        Given where every read on the driver begins a transaction (MySQL/MariaDB).
        """
        self.driver = driver
        self.settles_cancelled = driver.settles_cancelled
        self._engine = engine
        self._probe = probe
        self._gate = gate
        self._cannot_connect = cannot_connect
        self._serial = serial
        self._unbegun_reads = unbegun_reads

    async def first_connection_allows(self) -> bool:
        """Check the engine's first connection with the probe (once per engine)."""
        if not self._probe.needs_connection(self.driver):
            return True
        await self._gate()
        fairy = await self._checkout(self._engine)
        try:
            return self._probe.check_connection(self.driver, fairy.dbapi_connection)
        finally:
            await greenlet_spawn(fairy.close)

    async def read(self, operation: Operation[T], *, cursor: bool = False) -> T:
        """Run ``operation``; a read on a driver that begins a transaction ends with ROLLBACK.

        ``cursor`` changes nothing here: each driver's ``pages`` opens what its cursor needs.
        """
        engine = self._unbegun_reads or self._engine
        return await self._run(
            engine, operation, commit=False, reads_end_themselves=self._unbegun_reads is not None
        )

    async def write(self, operation: Operation[T]) -> T:
        """Run ``operation`` and COMMIT; on asyncpg (one statement) without BEGIN/COMMIT."""
        commit = not self.driver.lone_statement_commits
        return await self._run(self._engine, operation, commit=commit)

    async def _checkout(self, engine: AsyncEngine) -> Any:
        pool = engine.sync_engine.pool
        try:
            return await _driver.checkout(pool, _driver.quick_pool(pool))
        except Exception as exc:  # the pool raises the driver's own errors, unwrapped
            raise self._cannot_connect(exc) from exc

    async def _run(
        self,
        engine: AsyncEngine,
        operation: Operation[T],
        *,
        commit: bool,
        reads_end_themselves: bool = False,
    ) -> T:
        await self._gate()
        lock = None if self._serial is None else self._serial.get()
        if lock is not None:
            await lock.acquire()
        try:
            pool = engine.sync_engine.pool
            fairy = await self._checkout(engine)
            return await _driver.run_on_pool(
                pool,
                self.driver,
                engine.dialect,
                operation,
                fairy=fairy,
                commit=commit,
                reads_end_themselves=reads_end_themselves,
            )
        finally:
            if lock is not None:
                lock.release()
