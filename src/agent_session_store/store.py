"""``SessionStore``: one engine, one pair of tables, and the statements run against them.

A store builds its SQL once, at construction, and every :class:`SQLAlchemySession` made from
it reuses those statements. Writes run in one transaction each, retried only after errors
that mean the server rolled the transaction back, and are shielded from cancellation so a
cancelled call is all-or-nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import timedelta
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqlalchemy import (
    Integer,
    MetaData,
    Table,
    bindparam,
    delete,
    event,
    insert,
    literal_column,
    select,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from agent_session_store import _dialect, _driver
from agent_session_store._driver import CoreLink, Link, Statement
from agent_session_store._json import check_limit, check_session_id, decode_rows, encode_items
from agent_session_store._record_sql import seconds_of
from agent_session_store._scoped import PLAIN, Scope
from agent_session_store._scoped_ops import ScopedOperations
from agent_session_store.admin import StoreAdmin
from agent_session_store.errors import CommitOutcomeUnknownError, DatabaseConnectionError
from agent_session_store.models import (
    DEFAULT_MESSAGES_TABLE,
    DEFAULT_SESSIONS_TABLE,
    AgentMessageColumns,
    AgentSessionColumns,
    make_models,
)
from agent_session_store.records import UNSET, RecordPage, Removed, SessionRecord, SessionRecords

if TYPE_CHECKING:
    from agent_session_store.session import SQLAlchemySession

logger = logging.getLogger("agent_session_store")

T = TypeVar("T")
_MAX_ATTEMPTS = 8
#: A history up to this many items is read in one buffered statement; a longer one is streamed.
_HEAD = 2_000
#: Rows per fetch when a full read streams.
_PAGE = 1_000
_RETRY = object()  # a pop lost its row to a concurrent popper; look again
#: ``LIMIT 1`` written into the SQL: as a parameter, PostgreSQL cannot use a cached generic plan
#: for it (a generic LIMIT looks costlier) and plans the statement again at every execution.
_ONE = literal_column("1", Integer)
_UNLOCKED: AbstractAsyncContextManager[None] = nullcontext()


class SessionStore(StoreAdmin):
    """Conversation history in two tables, reached through one async engine.

    Args:
        engine_or_url: An ``AsyncEngine`` the caller owns, or a database URL (``str`` or
            ``URL``) for which the store creates and owns an engine. Defaults to the embedded
            SQLite file ``sqlite+aiosqlite:///agent_sessions.db``.
        sessions_table: Name of the sessions table.
        messages_table: Name of the messages table.
        base: A host application's declarative base to put the models on.
        engine_kwargs: Extra arguments for ``create_async_engine`` when given a URL.
        check_schema: Before the first statement, check that the tables are at this package's
            migration head and match the models; raise ``SchemaOutOfDateError`` otherwise
            (nothing is migrated automatically: run ``agent_session_store.upgrade``).
        ttl: Sliding time to live of every session (``timedelta`` or seconds): each write
            moves ``expires_at`` to now + ttl, and an expired session reads as empty until
            :meth:`purge_expired` deletes it. None: sessions expire only when given a time.

    Example:
        >>> async with SessionStore("sqlite+aiosqlite:///chat.db") as store:  # doctest: +SKIP
        ...     await store.create_tables()
        ...     session = store.session("user-42")
        ...     await session.add_items([{"role": "user", "content": "hi"}])
    """

    def __init__(
        self,
        engine_or_url: AsyncEngine | str | URL | None = None,
        *,
        sessions_table: str = DEFAULT_SESSIONS_TABLE,
        messages_table: str = DEFAULT_MESSAGES_TABLE,
        base: type[Any] | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
        check_schema: bool = False,
        ttl: timedelta | float | None = None,
    ) -> None:
        models = make_models(base, sessions_table=sessions_table, messages_table=messages_table)
        kwargs: dict[str, Any] = {}
        if isinstance(engine_or_url, AsyncEngine):
            if engine_kwargs:
                raise TypeError("engine_kwargs only applies when the store is given a URL")
            engine, self._owns_engine = engine_or_url, False
        else:
            url = _dialect.async_url(engine_or_url or _dialect.DEFAULT_URL)
            # Every checkout of ours goes through a Connection that commits or rolls back before
            # returning it, so the pool's own ROLLBACK on return (a round trip on MySQL, a thread
            # hop on aiosqlite, after every commit) has nothing left to do.
            kwargs = {"pool_reset_on_return": None, **dict(engine_kwargs or {})}
            if "poolclass" not in kwargs and _dialect.pools_connections(url):
                # Last in, first out: one caller at a time keeps reusing the same warm
                # connection (its server process, plan cache, driver statement cache) instead
                # of cycling through every connection a burst of concurrency opened; the
                # extra ones go idle. Measured: PostgreSQL pops after 40 concurrent sessions
                # ran at 0.70x the raw driver with FIFO.
                kwargs.setdefault("pool_use_lifo", True)
            engine, self._owns_engine = create_async_engine(url, **kwargs), True
        _dialect.configure_sqlite(engine.sync_engine)

        self._engine = engine
        self.AgentSession: type[AgentSessionColumns] = models.AgentSession
        self.AgentMessage: type[AgentMessageColumns] = models.AgentMessage
        self.sessions_table = sessions_table
        self.messages_table = messages_table
        # One connection shared by every task (SQLite :memory:) must be used by one at a time.
        self._serial = asyncio.Lock() if isinstance(engine.pool, StaticPool) else None
        # SQLite runs one writer at a time. Writers of this process queue on an asyncio lock
        # (one per event loop) instead of in SQLite's busy handler, which polls with sleeps of
        # 1 ms growing to 100 ms; other processes still meet the busy timeout.
        self._one_writer = engine.dialect.name == "sqlite" and self._serial is None
        self._writer_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._writer_locks = weakref.WeakKeyDictionary()
        # PostgreSQL drivers open a transaction with BEGIN and close it with ROLLBACK, two round
        # trips around a single-statement read that is atomic on its own. Elsewhere that
        # mode costs more than it saves (a SET on MySQL, a thread hop each way on aiosqlite).
        self._autocommit = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else None
        )
        self._tables_ready = False
        self._tables_lock = asyncio.Lock()
        # MySQL/MariaDB drop the connection on a statement over max_allowed_packet: check first.
        self._check_packets = _dialect.is_mysql(engine.dialect)
        self._max_packet: int | None = None
        self._build_statements(engine)
        self.ttl: int | None = None if ttl is None else seconds_of(ttl)
        #: Owner, title, metadata and expiry of the sessions: see :class:`SessionRecords`.
        self.records = SessionRecords(engine, self.sessions, self.messages)
        self._scoped = ScopedOperations(
            self, engine.dialect, lambda core, **kw: _driver.prepare(core, engine.dialect, **kw)
        )
        # Hot statements run on the driver's own connection where we know the driver and no
        # statement of ours needs SQLAlchemy's type processing (see _driver).
        self._driver = _driver.driver_for(engine.dialect)
        if self._driver is not None and any(s.sql is None for s in self._hot_statements()):
            self._driver = None
        # MySQL/MariaDB: a read on a connection with autocommit off (as SQLAlchemy keeps them)
        # opens a transaction that must be ended, a second round trip. Engines the store makes
        # get a second pool, in autocommit mode, for the driver path's reads: one round trip.
        self._read_engine: AsyncEngine | None = None
        if self._owns_engine and self._driver is not None and self._driver.reads_begin:
            read_kwargs = {**kwargs, "isolation_level": "AUTOCOMMIT"}
            read_engine = self._read_engine = create_async_engine(engine.url, **read_kwargs)

            # Disposing the engine (``store.engine``, ``session.engine``) closes both pools.
            def dispose_reads(_engine: Any) -> None:
                read_engine.sync_engine.dispose()

            event.listen(engine.sync_engine, "engine_disposed", dispose_reads)
        # With check_schema, the first checkout compares the database with the migration head.
        self._schema_pending = check_schema
        self._schema_lock = asyncio.Lock()

    async def _check_schema(self) -> None:
        async with self._schema_lock:
            if not self._schema_pending:
                return
            # Imported here: only stores that check pay for importing Alembic.
            from agent_session_store.migrate import check

            await check(
                self._engine, sessions_table=self.sessions_table, messages_table=self.messages_table
            )
            self._schema_pending = False

    def _build_statements(self, engine: AsyncEngine) -> None:
        s, m, dialect = self.sessions, self.messages, engine.dialect

        def prepare(core: Any, *, modifies: bool = False) -> Statement:
            return _driver.prepare(core, dialect, modifies=modifies)

        sid = bindparam("sid", type_=s.c.session_id.type)
        lim = bindparam("lim", type_=Integer)
        newest_first = select(m.c.id, m.c.message_data).where(m.c.session_id == sid)
        newest_first = newest_first.order_by(m.c.id.desc())
        select_all = select(m.c.message_data).where(m.c.session_id == sid).order_by(m.c.id)
        self._select_head = prepare(select_all.limit(lim))
        self._stream_all = select_all.execution_options(yield_per=_PAGE)
        # The newest items' text only (an id column costs ~3 us a row to decode on aiomysql);
        # with ids when a read has to page back past undecodable rows.
        newest_text = select(m.c.message_data).where(m.c.session_id == sid)
        self._select_tail = prepare(newest_text.order_by(m.c.id.desc()).limit(lim))
        self._select_tail_ids = prepare(newest_first.limit(lim))
        self._select_tail_before = prepare(
            newest_first.where(m.c.id < bindparam("before", type_=Integer)).limit(lim)
        )
        touch = _dialect.touch_session(dialect, s).values(session_id=sid)
        self._touch = prepare(touch, modifies=True)
        append = _dialect.append_items(dialect, s, m)
        self._append = None if append is None else prepare(append, modifies=True)
        text_param = bindparam("text", type_=m.c.message_data.type)
        self._insert = prepare(
            insert(m).values(session_id=sid, message_data=text_param), modifies=True
        )
        self._max_packet_query = prepare(_dialect.MAX_PACKET)
        self._exists = prepare(select(m.c.id).where(m.c.session_id == sid).limit(_ONE))
        self._delete_messages = prepare(delete(m).where(m.c.session_id == sid), modifies=True)
        self._delete_session = prepare(delete(s).where(s.c.session_id == sid), modifies=True)
        # MySQL/MariaDB refuse a DELETE whose subquery reads the same table: lock, then delete.
        self._pop_returning = not _dialect.is_mysql(dialect)
        newest_id = select(m.c.id).where(m.c.session_id == sid).order_by(m.c.id.desc()).limit(_ONE)
        self._pop = prepare(
            delete(m).where(m.c.id == newest_id.scalar_subquery()).returning(m.c.message_data),
            modifies=True,
        )
        self._select_newest_locked = prepare(newest_first.limit(_ONE).with_for_update())
        self._delete_by_id = prepare(
            delete(m).where(m.c.id == bindparam("row_id", type_=Integer)), modifies=True
        )

    def _hot_statements(self) -> list[Statement]:
        hot = [self._select_head, self._select_tail, self._select_tail_ids, self._exists]
        hot.append(self._select_tail_before)
        hot += [self._delete_messages, self._delete_session]
        if self._append is not None:
            hot.append(self._append)
        else:
            hot += [self._touch, self._insert]
        if self._pop_returning:
            hot.append(self._pop)
        else:
            hot += [self._select_newest_locked, self._delete_by_id]
        if self._check_packets:
            hot.append(self._max_packet_query)
        return hot

    # -- properties -------------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        """The async engine this store runs on."""
        return self._engine

    @property
    def metadata(self) -> MetaData:
        """The ``MetaData`` holding this store's tables (the host's, on a host base)."""
        return self.sessions.metadata

    @property
    def sessions(self) -> Table:
        """The sessions ``Table``."""
        return self.AgentSession.__table__  # type: ignore[attr-defined,no-any-return]

    @property
    def messages(self) -> Table:
        """The messages ``Table``."""
        return self.AgentMessage.__table__  # type: ignore[attr-defined,no-any-return]

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return (
            f"<SessionStore url={url!r} sessions_table={self.sessions_table!r} "
            f"messages_table={self.messages_table!r}>"
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def create_tables(self) -> None:
        """Create this store's two tables and index if missing.

        Idempotent, and safe when many tasks or processes call it at once. Meant for tests and
        quick starts; production schemas are managed with the shipped Alembic migrations.
        """
        if self._tables_ready:
            return
        async with self._tables_lock:
            if self._tables_ready:
                return
            tables = [self.sessions, self.messages]
            for attempt in range(_MAX_ATTEMPTS):
                try:
                    async with self._begin() as conn:
                        await conn.run_sync(self.metadata.create_all, tables=tables)
                    break
                except DBAPIError:
                    # Another process created a table between our check and our CREATE.
                    if attempt == _MAX_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
            self._tables_ready = True

    async def close(self) -> None:
        """Dispose the engine if the store created it; an engine passed in is left alone."""
        if self._owns_engine:
            await self._engine.dispose()
        if self._read_engine is not None:
            await self._read_engine.dispose()

    async def __aenter__(self) -> SessionStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def session(
        self,
        session_id: str,
        *,
        session_settings: Any = None,
        user_id: str | None = None,
        ttl: timedelta | float | None = UNSET,
    ) -> SQLAlchemySession:
        """Return the Session-protocol object for ``session_id`` on this store.

        Args:
            session_id: The conversation's id.
            session_settings: As for :class:`SQLAlchemySession`.
            user_id: Bind the handle to this owner: its first write creates the session
                owned by ``user_id``, and every call on a session of another owner (or of
                none) raises ``SessionOwnershipError`` and changes nothing.
            ttl: This handle's sliding time to live, instead of the store's; None for none.
        """
        from agent_session_store.session import SQLAlchemySession

        return SQLAlchemySession(
            session_id, store=self, session_settings=session_settings, user_id=user_id, ttl=ttl
        )

    def scope(self, user_id: str | None = None, ttl: timedelta | float | None = UNSET) -> Scope:
        """What a handle with this owner and time to live is bound to."""
        if user_id is not None:
            check_session_id(user_id)  # same rules as ids: a str of 1 to 255 characters
        seconds = self.ttl if ttl is UNSET else (None if ttl is None else seconds_of(ttl))
        return Scope(user_id, seconds, expiry=self.ttl is not None or seconds is not None)

    # -- records: owners, titles, metadata, listing, expiry, erasure (see records.py) -------

    async def info(self, session_id: str, user_id: str | None = None) -> SessionRecord | None:
        """The record of ``session_id``: see :meth:`SessionRecords.info`."""
        return await self.records.info(session_id, user_id)

    async def list_sessions(self, **filters: Any) -> RecordPage:  # type: ignore[override]
        """A page of session records: see :meth:`SessionRecords.list_sessions`."""
        return await self.records.list_sessions(**filters)

    async def purge_expired(self, *, batch_size: int = 500, dry_run: bool = False) -> Removed:
        """Delete expired sessions and their items: see :meth:`SessionRecords.purge_expired`."""
        return await self.records.purge_expired(batch_size=batch_size, dry_run=dry_run)

    async def erase_user(
        self, user_id: str, *, batch_size: int = 500, dry_run: bool = False
    ) -> Removed:
        """Delete every session and item of ``user_id``: see :meth:`SessionRecords.erase_user`."""
        return await self.records.erase_user(user_id, batch_size=batch_size, dry_run=dry_run)

    # -- connections ------------------------------------------------------------------------

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        if self._serial is None:
            async with self._checkout() as conn:
                yield conn
        else:
            async with self._serial, self._checkout() as conn:
                yield conn

    def _read_connection(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for reads, each statement atomic by itself: autocommit where cheaper."""
        if self._autocommit is not None and self._serial is None:
            return self._checkout(self._autocommit)
        return self._connect()

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        if self._serial is None:
            async with self._checkout() as conn, conn.begin():
                yield conn
        else:
            async with self._serial, self._checkout() as conn, conn.begin():
                yield conn

    @asynccontextmanager
    async def _checkout(self, engine: AsyncEngine | None = None) -> AsyncIterator[AsyncConnection]:
        if self._schema_pending:
            await self._check_schema()
        engine = engine or self._engine
        conn = engine.connect()
        try:
            await conn.start()
        except (OSError, asyncio.TimeoutError, DBAPIError) as exc:
            raise self._cannot_connect(exc) from exc
        try:
            yield conn
        finally:
            await conn.close()

    def _cannot_connect(self, exc: BaseException) -> DatabaseConnectionError:
        # Drivers fail in their own words (a bare OSError from asyncpg); say it in ours.
        url = self._engine.url.render_as_string(hide_password=True)
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        return DatabaseConnectionError(
            f"cannot connect to the database at {url}: {type(cause).__name__}: {cause}; "
            "check that the database server is running and reachable (for SQLite: that "
            "the file can be opened), then call again: the same store reconnects by itself"
        )

    def _fast(self) -> _driver.Driver | None:
        """The driver to run hot statements on, unless something observes statements."""
        driver = self._driver
        if driver is None or _driver.observed(self._engine.sync_engine):
            return None
        return driver

    async def _on_driver(
        self,
        driver: _driver.Driver,
        body: Callable[[Link], Awaitable[T]],
        *,
        autocommit: bool,
        commit: bool,
        engine: AsyncEngine | None = None,
    ) -> T:
        if self._schema_pending:
            await self._check_schema()
        run = _driver.run_on_pool(
            (engine or self._engine).sync_engine.pool,
            self._cannot_connect,
            driver,
            self._engine.dialect,
            body,
            autocommit=autocommit,
            commit=commit,
            pool_autocommit=engine is not None,
        )
        if self._serial is None:
            return await run
        async with self._serial:
            return await run

    async def _reading(self, body: Callable[[Link | CoreLink], Awaitable[T]]) -> T:
        """Run ``body``, whose statements are reads each atomic by itself."""
        driver = self._fast()
        if driver is None:
            async with self._read_connection() as conn:
                return await body(CoreLink(conn))
        return await self._on_driver(
            driver, body, autocommit=True, commit=False, engine=self._read_engine
        )

    async def _writing(
        self, body: Callable[[Link | CoreLink], Awaitable[T]], driver: _driver.Driver | None
    ) -> T:
        """Run ``body`` in one transaction, committed when it returns.

        ``driver``: run it on the driver's connection (see :meth:`_write` for when), else
        through SQLAlchemy. On a driver where a lone statement commits by itself (asyncpg)
        only single-statement writes come here; they run without BEGIN and COMMIT, and
        sending the statement is the commit point (``link.committing``).
        """
        if driver is None:
            async with self._begin() as conn:
                on_core = CoreLink(conn)
                result = await body(on_core)
                on_core.committing = True  # the COMMIT is sent as the block exits
            return result
        autocommit = driver.autocommit
        return await self._on_driver(driver, body, autocommit=autocommit, commit=not autocommit)

    def _writer(self) -> AbstractAsyncContextManager[Any]:
        if not self._one_writer:
            return _UNLOCKED
        loop = asyncio.get_running_loop()
        lock = self._writer_locks.get(loop)
        if lock is None:
            lock = self._writer_locks[loop] = asyncio.Lock()
        return lock

    async def _write(
        self, operation: Callable[[Link | CoreLink], Awaitable[T]], *, single: bool = False
    ) -> T:
        """Run ``operation`` in one transaction, retrying server-side rollbacks; all or nothing.

        A connection lost before anything could have been committed means nothing was
        written, so the operation runs once more on a fresh connection; one lost after
        (during COMMIT, or during a statement that commits by itself) raises
        ``CommitOutcomeUnknownError`` instead of risking a second copy.

        A cancelled write has settled when the caller sees ``CancelledError``: what is stored
        then stays so. On the driver path of aiosqlite and asyncpg the write stops where it is
        and waits for the server to finish with what was sent (rolled back, or committed if
        its COMMIT or single statement got there first). Elsewhere (aiomysql, whose protocol
        a cancellation breaks; SQLAlchemy's path, which cannot be left mid-transaction) the
        write runs to its end in its own task.
        """
        driver = self._fast()
        if driver is not None and not (single or not driver.autocommit):
            driver = None  # a multi-statement write on asyncpg: BEGIN ... COMMIT, SQLAlchemy's
        if driver is not None and driver.settles_cancelled:
            return await self._retrying(operation, driver)
        return await _settle(self._retrying(operation, driver))

    async def _write_core(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """:meth:`_write` for an operation on SQLAlchemy's ``AsyncConnection``."""

        async def on_core(link: Link | CoreLink) -> T:
            assert isinstance(link, CoreLink)
            return await operation(link.conn)

        return await _settle(self._retrying(on_core, None))

    async def _retrying(
        self, operation: Callable[[Link | CoreLink], Awaitable[T]], driver: _driver.Driver | None
    ) -> T:
        lost_before = False
        for attempt in range(_MAX_ATTEMPTS):
            used: list[Link | CoreLink] = []
            try:
                async with self._writer():
                    return await self._writing(partial(_recording, used, operation), driver)
            except DBAPIError as exc:
                if used and used[0].committing and exc.connection_invalidated:
                    raise CommitOutcomeUnknownError(
                        "the database connection was lost while committing; the write may or "
                        "may not have been saved, so it was not retried: read the session "
                        f"before writing again ({type(exc.orig).__name__}: {exc.orig})"
                    ) from exc
                # A connection lost before COMMIT was sent took its transaction with it; one
                # retry on a fresh connection, since a statement that kills it would again.
                lost = exc.connection_invalidated
                if lost and lost_before:
                    raise
                lost_before = lost_before or lost
                if attempt == _MAX_ATTEMPTS - 1 or not (lost or _dialect.is_retryable(exc)):
                    raise
                logger.debug("retrying a rolled-back transaction: %s", exc.orig)
                if not lost:
                    await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise AssertionError("unreachable")

    # -- the four operations, by session id -------------------------------------------------

    async def get_items(
        self, session_id: str, limit: int | None = None, *, scope: Scope | None = None
    ) -> list[Any]:
        """All items of ``session_id`` in order, or the latest ``limit`` in chronological order."""
        check_session_id(session_id)
        limit = check_limit(limit)
        scope = self._scope_of(scope)
        if limit == 0 and scope.user_id is None:
            return []
        if not scope.plain:
            return await self._scoped.get_items(session_id, limit, scope)
        try:
            return await self._read(session_id, limit)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # A read changes nothing, so a connection the server dropped earns one more try.
            return await self._read(session_id, limit)

    async def _read(self, session_id: str, limit: int | None) -> list[Any]:
        warn = self._warn_corrupt(session_id)
        if limit is not None:
            return await self._reading(lambda link: self._tail(link, session_id, limit))
        params = {"sid": session_id, "lim": _HEAD + 1}
        head = [
            row[0] for row in await self._reading(lambda link: link.rows(self._select_head, params))
        ]
        if len(head) <= _HEAD:
            return decode_rows(head, warn)
        del head
        # A long history: stream it, decoding page by page, so that its JSON text and its
        # decoded items are never in memory at once (one statement, one consistent snapshot).
        items: list[Any] = []
        async with self._connect() as conn:
            result = await conn.stream(self._stream_all, {"sid": session_id})
            async for page in result.scalars().partitions():
                items += decode_rows(page, warn)
        return items

    async def _tail(self, link: Link | CoreLink, session_id: str, limit: int) -> list[Any]:
        rows = await link.rows(self._select_tail, {"sid": session_id, "lim": limit})
        undecodable: list[str] = []
        items = decode_rows((row[0] for row in reversed(rows)), undecodable.append)
        if not undecodable:
            return items
        # Undecodable rows are skipped and the limit counts valid items: read again, with
        # ids, so that the read can go further back (and warn about what it skips).
        return await self._tail_paged(link, session_id, limit)

    async def _tail_paged(self, link: Link | CoreLink, session_id: str, limit: int) -> list[Any]:
        warn = self._warn_corrupt(session_id)
        wanted = limit
        rows = await link.rows(self._select_tail_ids, {"sid": session_id, "lim": wanted})
        items = decode_rows((row[1] for row in reversed(rows)), warn)
        while len(items) < limit and len(rows) == wanted:
            wanted = limit - len(items)
            params = {"sid": session_id, "lim": wanted, "before": rows[-1][0]}
            rows = await link.rows(self._select_tail_before, params)
            items[:0] = decode_rows((row[1] for row in reversed(rows)), warn)
        return items

    async def add_items(
        self, session_id: str, items: list[Any], *, scope: Scope | None = None
    ) -> None:
        """Append ``items`` to ``session_id`` atomically, creating the session if needed."""
        check_session_id(session_id)
        encoded = encode_items(items)
        if not encoded:
            return
        scope = self._scope_of(scope)
        if not scope.plain:
            await self._scoped.add_items(session_id, encoded, scope)
            return
        append = self._append
        if append is not None:
            one = {"sid": session_id, "texts": encoded}
            await self._write(lambda link: link.run(append, one), single=True)
            return
        rows = [{"sid": session_id, "text": text} for text in encoded]
        params: dict[str, Any] | list[dict[str, Any]] = rows[0] if len(rows) == 1 else rows

        async def add(link: Link | CoreLink) -> None:
            if self._check_packets:
                if self._max_packet is None:
                    found = await link.rows(self._max_packet_query, {})
                    self._max_packet = int(found[0][0])
                _dialect.check_packet_size(encoded, session_id, self._max_packet)
            await link.run(self._touch, {"sid": session_id})
            await link.run(self._insert, params)

        await self._write(add)

    async def pop_item(self, session_id: str, *, scope: Scope | None = None) -> Any | None:
        """Remove and return the newest item of ``session_id``, or None when it has none."""
        check_session_id(session_id)
        scope = self._scope_of(scope)
        if not scope.plain:
            return await self._scoped.pop_item(session_id, scope)
        while True:
            text = await self._write(
                lambda link: self._pop_row(link, session_id), single=self._pop_returning
            )
            if text is None:
                return None
            if text is _RETRY:
                continue
            decoded = decode_rows([text], self._warn_corrupt(session_id))
            if decoded:
                return decoded[0]
            # A corrupt row was removed; the caller wants the newest readable item.

    async def _pop_row(self, link: Link | CoreLink, session_id: str) -> Any:
        params = {"sid": session_id}
        if not self._pop_returning:
            found = await link.rows(self._select_newest_locked, params)
            if not found:
                return None
            await link.run(self._delete_by_id, {"row_id": found[0][0]})
            return found[0][1]
        deleted = await link.rows(self._pop, params)
        if deleted:
            return deleted[0][0]
        # Nothing deleted: the session is empty, or a concurrent popper took the row we chose.
        if not await link.rows(self._exists, params):
            return None
        return _RETRY

    async def clear_session(self, session_id: str, *, scope: Scope | None = None) -> None:
        """Delete ``session_id``'s row and all its items."""
        check_session_id(session_id)
        scope = self._scope_of(scope)
        if not scope.plain:
            await self._scoped.clear_session(session_id, scope)
            return
        params = {"sid": session_id}

        async def clear(link: Link | CoreLink) -> None:
            await link.run(self._delete_messages, params)
            await link.run(self._delete_session, params)

        await self._write(clear)

    def _scope_of(self, scope: Scope | None) -> Scope:
        if scope is not None:
            return scope
        return PLAIN if self.ttl is None else Scope(ttl=self.ttl, expiry=True)

    async def _check_packet(self, link: Link | CoreLink, encoded: list[str], sid: str) -> None:
        if self._max_packet is None:
            found = await link.rows(self._max_packet_query, {})
            self._max_packet = int(found[0][0])
        _dialect.check_packet_size(encoded, sid, self._max_packet)

    @staticmethod
    def _warn_corrupt(session_id: str) -> Callable[[str], None]:
        def warn(text: str) -> None:
            logger.warning(
                "skipping an item of session %r that is not valid JSON (%d characters)",
                session_id,
                len(text) if isinstance(text, str) else -1,
            )

        return warn

    # -- sharing between SDK-style sessions -------------------------------------------------

    _shared: ClassVar[weakref.WeakValueDictionary[tuple[int, str, str], SessionStore]] = (
        weakref.WeakValueDictionary()
    )

    @classmethod
    def shared(
        cls,
        engine: AsyncEngine,
        *,
        sessions_table: str = DEFAULT_SESSIONS_TABLE,
        messages_table: str = DEFAULT_MESSAGES_TABLE,
    ) -> SessionStore:
        """The store for this engine and table names, shared while anything uses it."""
        # The store holds the engine, so the id cannot be reused while the entry lives.
        key = (id(engine.sync_engine), sessions_table, messages_table)
        store = cls._shared.get(key)
        if store is None:
            store = cls(engine, sessions_table=sessions_table, messages_table=messages_table)
            cls._shared[key] = store
        return store


async def _recording(
    used: list[Link | CoreLink],
    operation: Callable[[Link | CoreLink], Awaitable[T]],
    link: Link | CoreLink,
) -> T:
    """Run ``operation`` on ``link``, noting the link so the caller can see how far it got."""
    used.append(link)
    return await operation(link)


async def _settle(operation: Awaitable[T]) -> T:
    """Await ``operation`` to its end even if the caller is cancelled, then re-raise that.

    A write interrupted half-way would leave its connection mid-transaction; letting it
    finish makes every call all-or-nothing, as the SDK's own sessions do.
    """
    task = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            try:
                await asyncio.wait([task])
            except asyncio.CancelledError:
                continue
        if not task.cancelled():
            task.exception()  # mark retrieved; the caller's cancellation wins
        raise
