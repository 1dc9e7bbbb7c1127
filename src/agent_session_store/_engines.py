"""Which engine serves the running event loop, and the executors built on it.

asyncpg and aiomysql connections belong to the event loop that opened them. A store that made
its engine therefore keeps one engine (one pool) per event loop — ``asyncio.run`` per call,
or a loop per thread — each disposed when its loop shuts down (``shutdown_asyncgens``, which
``asyncio.run`` calls) and by ``close()``. A host's engine is never copied: used from a loop
other than the one its pooled connections belong to, it raises ``WrongEventLoopError``
before the driver fails in its own words.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, Pool, StaticPool

from agent_session_store import _dialect, _driver
from agent_session_store._executor import CoreExecutor, DriverExecutor, Gate, ThreadLock
from agent_session_store._family import is_postgresql, is_sqlite
from agent_session_store._probe import Probe
from agent_session_store._retry import RetryPolicy
from agent_session_store._statements import Statements
from agent_session_store._transport import Transport
from agent_session_store.errors import WrongEventLoopError

#: Drivers whose connections belong to the event loop that opened them (aiosqlite's run
#: in a thread and answer whichever loop awaits them).
_LOOP_BOUND_DRIVERS = frozenset({"asyncpg", "aiomysql"})


@dataclass
class Binding:
    """One engine of a store and the transport over it."""

    engine: AsyncEngine
    transport: Transport
    read_engine: AsyncEngine | None = None
    #: Held so the loop's ``shutdown_asyncgens`` finds it and disposes the engine.
    disposer: Any = field(default=None, repr=False)

    async def dispose(self) -> None:
        """Close every pooled connection of this binding's engines."""
        await self.engine.dispose()
        if self.read_engine is not None:
            await self.read_engine.dispose()


def build(
    engine: AsyncEngine,
    statements: Statements,
    gate: Gate,
    cannot_connect: Callable[[BaseException], Exception],
    *,
    owned_kwargs: dict[str, Any] | None,
    retry: RetryPolicy | None = None,
    hosts: int = 1,
) -> Binding:
    """The executors for ``engine``; ``owned_kwargs``: how the store made it, if it did.

    ``retry``: the store's retry policy; ``hosts``: how many hosts the engine can connect to.
    """
    dialect = engine.dialect
    # One connection shared by every task (SQLite :memory:) must be used by one at a time,
    # whichever thread and event loop it runs in.
    serial = ThreadLock() if isinstance(engine.pool, StaticPool) else None
    # PostgreSQL drivers open a transaction with BEGIN and close it with ROLLBACK, two round
    # trips around a single-statement read that is atomic on its own. Elsewhere that
    # mode costs more than it saves (a SET on MySQL, a thread hop each way on aiosqlite).
    core_reads = (
        engine.execution_options(isolation_level="AUTOCOMMIT")
        if is_postgresql(dialect)
        else None
    )
    core = CoreExecutor(engine, gate, cannot_connect, serial=serial, unbegun_reads=core_reads)
    driver = _driver.driver_for(dialect)
    probe = Probe(engine.sync_engine, driver, statements)
    executor: DriverExecutor | None = None
    read_engine: AsyncEngine | None = None
    if driver is not None and probe.fixed_reason is None:
        if owned_kwargs is not None and driver.reads_begin:
            read_engine = _autocommit_twin(engine, owned_kwargs)
        executor = DriverExecutor(
            engine, driver, probe, gate, cannot_connect, serial=serial, unbegun_reads=read_engine
        )
    # SQLite runs one writer at a time. Writers of this process queue on an asyncio lock
    # (one per event loop) instead of in SQLite's busy handler, which polls with sleeps of
    # 1 ms growing to 100 ms; other processes still meet the busy timeout.
    one_writer = is_sqlite(dialect) and serial is None
    transport = Transport(
        core,
        executor,
        probe,
        one_writer=one_writer,
        retry=retry,
        lost_retries=hosts,
        waits_for_primary=_dialect.waits_for_primary(engine.url),
    )
    return Binding(engine, transport, read_engine)


def _autocommit_twin(engine: AsyncEngine, kwargs: dict[str, Any]) -> AsyncEngine:
    """MySQL/MariaDB: a second pool, in autocommit mode, for the driver path's reads.

    A read on a connection with autocommit off (as SQLAlchemy keeps them) opens a transaction
    that must be ended, a second round trip. Only engines the store made get one; on a host's
    engine a ROLLBACK follows each read.
    """
    twin = create_async_engine(engine.url, **{**kwargs, "isolation_level": "AUTOCOMMIT"})

    # Disposing the engine (``store.engine``, ``session.engine``) closes both pools.
    def dispose_twin(_engine: Any) -> None:
        twin.sync_engine.dispose()

    event.listen(engine.sync_engine, "engine_disposed", dispose_twin)
    return twin


class Bindings:
    """The store's engines by event loop: ``current()`` is the running loop's."""

    def __init__(
        self,
        first: Binding,
        make: Callable[[], Binding] | None,
    ) -> None:
        """``make`` builds a binding on a new engine (the store owns its engines).

        None when every loop must share ``first`` (a host's engine, or SQLite ``:memory:``).
        """
        self.first = first
        self._make = make
        self._unclaimed: Binding | None = first
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Binding]
        self._by_loop = weakref.WeakKeyDictionary()
        self._claiming = threading.Lock()
        #: A host engine's pool, and the loop its connections were made on.
        self._pool_loops: weakref.WeakKeyDictionary[Pool, weakref.ref[Any]]
        self._pool_loops = weakref.WeakKeyDictionary()
        self._loop_bound = first.engine.dialect.driver in _LOOP_BOUND_DRIVERS

    def current(self) -> Binding:
        """The binding of the running event loop, made on its first use."""
        loop = asyncio.get_running_loop()
        found = self._by_loop.get(loop)
        if found is None:
            found = self._claim(loop)
        elif self._make is None and self._loop_bound:
            self._check_loop(loop)
        return found

    def _claim(self, loop: asyncio.AbstractEventLoop) -> Binding:
        with self._claiming:
            found = self._by_loop.get(loop)
            if found is not None:
                return found
            if self._make is None:
                if self._loop_bound:
                    self._check_loop(loop)
                found = self.first
            else:
                found, self._unclaimed = self._unclaimed or self._make(), None
                found.disposer = _dispose_at_shutdown(found)
            self._by_loop[loop] = found
            return found

    def _check_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        pool = self.first.engine.sync_engine.pool
        if isinstance(pool, NullPool):
            return
        owner = self._pool_loops.get(pool)
        owner_loop = None if owner is None else owner()
        if owner_loop is loop:
            return
        if owner_loop is not None and pool.checkedin() + pool.checkedout() > 0:  # type: ignore[attr-defined]
            raise WrongEventLoopError(
                "this store was given an engine whose pooled connections belong to another "
                "event loop (asyncpg and aiomysql connections cannot be used from a second "
                "loop, as with one asyncio.run() per call or one loop per thread); give the "
                "store an engine made with poolclass=NullPool, make one engine per event "
                "loop, dispose the engine before switching loops, or let the store make its "
                "engine from a URL (it then keeps one pool per loop)"
            )
        self._pool_loops[pool] = weakref.ref(loop)

    def others(self) -> list[tuple[asyncio.AbstractEventLoop, Binding]]:
        """Bindings of loops other than the running one."""
        running = asyncio.get_running_loop()
        return [(loop, b) for loop, b in list(self._by_loop.items()) if loop is not running]

    async def dispose_all(self) -> None:
        """Dispose every engine: the running loop's here, the others' on their own loops."""
        mine = {id(b) for loop, b in self._by_loop.items() if loop is asyncio.get_running_loop()}
        if self._unclaimed is not None:
            await self._unclaimed.dispose()
        for binding in [b for b in self._by_loop.values() if id(b) in mine]:
            await binding.dispose()
        waits: list[Awaitable[Any]] = []
        for loop, binding in self.others():
            if loop.is_running() and not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(binding.dispose(), loop)
                waits.append(asyncio.wrap_future(future))
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=5)


def _dispose_at_shutdown(binding: Binding) -> Any:
    """An async generator, started now, whose ``finally`` disposes ``binding``.

    Starting it registers it with the running loop (its asyncgen hooks); the loop's
    ``shutdown_asyncgens`` (which ``asyncio.run`` calls before closing) closes it while the
    loop still runs, so the engine's connections are closed on the loop that opened them.
    """

    async def until_shutdown() -> AsyncIterator[None]:
        try:
            yield
        finally:
            await binding.dispose()

    generator = until_shutdown()
    step: Any = generator.__anext__()
    with suppress(StopIteration):
        step.send(None)  # runs to the yield without awaiting anything
    return generator


def owned_engine(url: Any, kwargs: dict[str, Any]) -> AsyncEngine:
    """An engine the store makes (one per event loop), configured as the store's first."""
    engine = create_async_engine(url, **kwargs)
    _dialect.configure_sqlite(engine.sync_engine)
    return engine
