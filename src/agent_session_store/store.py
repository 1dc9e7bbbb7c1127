"""``SessionStore``: one engine, one pair of tables, and the four operations on them.

The store owns its engine (when it made it) and the lifecycle; its statements are built
once (``_statements``) and reach the database through one funnel, ``_transport.Transport``,
which picks the executor (``_executor``: Core, or the driver path where ``_probe`` allows it).
Store-wide operations (list, count, prune, export, import) are ``admin.StoreAdmin``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqlalchemy import MetaData, Table
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import StaticPool

from agent_session_store import _dialect, _engines, _hosts, _idempotency, _replica
from agent_session_store._archive import Archive, check_archive
from agent_session_store._executor import LoopLocks, Operation, Runner
from agent_session_store._expiry import RowState, touched
from agent_session_store._family import family_of, is_sqlite
from agent_session_store._history import History, check_count
from agent_session_store._json import (
    check_limit,
    check_session_id,
    check_user_id,
    decode_rows,
    encode_items,
)
from agent_session_store._probe import schema_map
from agent_session_store._record_sql import seconds_of
from agent_session_store._records import Record
from agent_session_store._replica import ReplicaStats
from agent_session_store._retry import RetryStats, retry_policy
from agent_session_store._scoped import PLAIN, Scope
from agent_session_store._scoped_ops import ScopedOperations
from agent_session_store._statements import PAGE, Statements, prepare
from agent_session_store._transport import MAX_ATTEMPTS, Transport, WriteShape
from agent_session_store.admin import (
    ImportResult,
    PruneResult,
    SessionInfo,
    StoreAdmin,
)
from agent_session_store.errors import ArgumentTypeError, DatabaseConnectionError, StoreClosedError
from agent_session_store.models import (
    DEFAULT_MESSAGES_TABLE,
    DEFAULT_SESSIONS_TABLE,
    AgentKeyColumns,
    AgentMessageColumns,
    AgentSessionColumns,
    AgentUsageColumns,
    ArchivedItemColumns,
    make_models,
)
from agent_session_store.records import UNSET, RecordPage, Removed, SessionRecord, SessionRecords
from agent_session_store.usage import GroupBy, RunUsage, UsageLedger, UsageTotals

if TYPE_CHECKING:
    from agent_session_store.session import SQLAlchemySession

logger = logging.getLogger("agent_session_store")
T = TypeVar("T")

#: Connections in the pool of an engine the store makes (per event loop; no overflow).
POOL_SIZE = 10
#: A history up to this many items is read in one buffered statement; a longer one is streamed.
HEAD = 2_000


class PopMiss(enum.Enum):
    """Why a pop statement returned no row."""

    EMPTY = "the session has no items"
    TAKEN = "a concurrent popper took the chosen row; look again"


class SessionStore:
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
        archive: True, or a retention ``timedelta``: items that ``pop_item``,
            ``clear_session``, ``rewind`` and ``replace_items`` remove move to the archive
            table in the same transaction, for :meth:`restore`; :meth:`purge_archive` with no
            argument deletes those older than the retention. False (the default): removed
            items are deleted, and the plain statements run unchanged.
        idempotency_keys: Give every ``add_items`` call that names no ``idempotency_key``
            one of its own, so that a connection lost at the commit point is settled by
            sending the batch again (the database refuses a second copy). False writes
            keys only for calls that give one; a lost commit of the others raises
            ``CommitOutcomeUnknownError``. None (the default): on for PostgreSQL and
            MySQL/MariaDB, where a network can cut a commit off; off for SQLite, which runs
            in the process and would pay a thread hop per call for it.
        replica: A PostgreSQL streaming replica for ``get_items`` and the reads of
            ``list_sessions``, ``info``, ``count_items`` and ``session_info``: a URL (the
            store makes its engines, as for the primary) or, with a primary engine, an
            ``AsyncEngine``. A session this store wrote is read on the replica once the
            replica has replayed that write, else on the primary; every other call goes to
            the primary (docs/scaling.md). ``store.replica_stats`` counts where reads went.
        replica_max_wait: Seconds a read waits for the replica to replay this store's last
            write of the session before it reads the primary instead.
        replica_max_tracked: Sessions whose last write is remembered by name.
        retry_deadline: Seconds (or a ``timedelta``) a write the server rolled back
            (deadlock, serialization failure, Galera certification conflict, SQLite busy)
            keeps being retried after its first such failure, with capped, jittered
            backoff; then its last error is raised. Default 20 s; 0 never retries.
        causal_reads: MySQL/MariaDB Galera, engines the store makes: each connection waits
            for the cluster's earlier writes before reading (``wsrep_sync_wait = 1``). None
            (default): on wherever the server reports ``wsrep_on``.

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
        archive: bool | timedelta = False,
        idempotency_keys: bool | None = None,
        replica: AsyncEngine | str | URL | None = None,
        replica_max_wait: float = _replica.MAX_WAIT_S,
        replica_max_tracked: int = _replica.MAX_TRACKED,
        retry_deadline: timedelta | float | None = None,
        causal_reads: bool | None = None,
    ) -> None:
        self._retry = retry_policy(retry_deadline)
        hosts = 1
        retention = check_archive(archive)
        models = make_models(base, sessions_table=sessions_table, messages_table=messages_table)
        kwargs: dict[str, Any] = {}
        check_async_engine(engine_or_url)
        if isinstance(engine_or_url, AsyncEngine):
            if engine_kwargs:
                raise ArgumentTypeError("engine_kwargs only applies when the store is given a URL")
            if causal_reads is not None:
                raise ArgumentTypeError(
                    "causal_reads only applies when the store is given a URL; on your own "
                    "engine, run SET SESSION wsrep_sync_wait = 1 in a connect event"
                )
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
                # Agent workloads come in bursts (a fan-out of many sessions at once). Past
                # pool_size, SQLAlchemy closes each connection given back while the pool is
                # full, so overflow meant a connect and a close per call during a burst; a
                # fixed pool queues the burst on warm connections instead (see
                # docs/performance.md, "Pool defaults").
                kwargs.setdefault("pool_size", POOL_SIZE)
                kwargs.setdefault("max_overflow", 0)
            if _dialect.is_mysql(url.get_dialect(_is_async=True)):
                url, kwargs, hosts = _hosts.owned_mysql_engine(url, kwargs, causal_reads)
            engine, self._owns_engine = _engines.owned_engine(url, kwargs), True
        family_of(engine.dialect)  # an unsupported dialect stops here, saying so
        _dialect.configure_sqlite(engine.sync_engine)

        self.AgentSession: type[AgentSessionColumns] = models.AgentSession
        self.AgentMessage: type[AgentMessageColumns] = models.AgentMessage
        self.AgentArchivedItem: type[ArchivedItemColumns] = models.AgentArchivedItem
        self.AgentKey: type[AgentKeyColumns] = models.AgentKey
        #: Whether calls without an ``idempotency_key`` get one (see ``idempotency_keys``).
        self.idempotency_keys = (
            not is_sqlite(engine.dialect) if idempotency_keys is None else bool(idempotency_keys)
        )
        self.AgentUsage: type[AgentUsageColumns] = models.AgentUsage
        self.sessions_table = sessions_table
        self.messages_table = messages_table
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._tables_ready = False
        self._tables_locks = LoopLocks()
        # With check_schema, the first checkout compares the database with the migration head.
        self._schema_pending = check_schema
        self._schema_locks = LoopLocks()
        self._max_packet: int | None = None
        self._statements = Statements(
            self.sessions, self.messages, engine.dialect, schema_map(engine.sync_engine), self.keys
        )
        owned = kwargs if self._owns_engine else None

        def bind(on: AsyncEngine) -> _engines.Binding:
            return _engines.build(
                on,
                self._statements,
                self._gate,
                self._cannot_connect,
                owned_kwargs=owned,
                retry=self._retry,
                hosts=hosts,
            )

        def make() -> _engines.Binding:
            return bind(_engines.owned_engine(engine.url, kwargs))

        # SQLite :memory: lives in its one connection: every loop shares it.
        per_loop = self._owns_engine and not isinstance(engine.pool, StaticPool)
        self._bindings = _engines.Bindings(bind(engine), make if per_loop else None)
        self._replica: _replica.ReplicaReads | None = None
        if replica is not None:
            self._replica = _replica.ReplicaReads(
                self._replica_bindings(engine, replica, kwargs),
                engine.dialect,
                owned=self._owns_engine,
                max_wait=replica_max_wait,
                max_tracked=replica_max_tracked,
            )
        self.ttl: int | None = None if ttl is None else seconds_of(ttl)
        #: The scope of calls without one; with ``archive=``, removals go to the archive.
        archives = retention is not None
        self._default_scope = (
            Scope(ttl=self.ttl, archive=archives) if self.ttl is not None or archives else PLAIN
        )
        self._archiver = Archive(self, retention)
        self._archive: Archive | None = None if retention is None else self._archiver
        self._history = History(self)
        shown_schema = schema_map(engine.sync_engine)
        self._scoped = ScopedOperations(
            self,
            engine.dialect,
            lambda core, **kw: prepare(core, engine.dialect, schema_map=shown_schema, **kw),
        )

    def _replica_bindings(
        self, primary: AsyncEngine, replica: AsyncEngine | str | URL, kwargs: dict[str, Any]
    ) -> _engines.Bindings:
        """The replica's engines: made by the store (one per loop), or the host's one."""
        engine = _replica.replica_engine(primary, replica, kwargs if self._owns_engine else None)
        owned = kwargs if self._owns_engine else None

        def cannot_connect(exc: BaseException) -> DatabaseConnectionError:
            return self._cannot_connect(exc, engine)

        def bind(on: AsyncEngine) -> _engines.Binding:
            return _engines.build(
                on, self._statements, self._gate, cannot_connect, owned_kwargs=owned
            )

        def make() -> _engines.Binding:
            return bind(_engines.owned_engine(engine.url, kwargs))

        return _engines.Bindings(bind(engine), make if self._owns_engine else None)

    async def _read(
        self, session_id: str | None, call: Callable[[_engines.Binding], Awaitable[T]]
    ) -> T:
        """Run a read on the replica when it shows this store's writes, else the primary."""
        primary = self._current()
        if self._replica is None:
            return await call(primary)
        return await self._replica.read(session_id, call, primary)

    def _wrote(self, session_id: str | None) -> None:
        """Note a write (None: of many sessions), so that reads wait until it is visible."""
        if self._replica is not None:
            self._replica.wrote(session_id)

    async def _write(self, session_id: str | None, operation: Operation[T], shape: WriteShape) -> T:
        try:
            return await self._transport.write(operation, shape)
        finally:
            self._wrote(session_id)

    async def _write_core(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """A Core write (history, archive): reads then owe it, whichever sessions it touched."""
        try:
            return await self._transport.write_core(operation)
        finally:
            self._wrote(None)

    @property
    def replica_stats(self) -> ReplicaStats | None:
        """Where this store's reads went (a snapshot), or None without a replica."""
        return None if self._replica is None else replace(self._replica.stats)

    def _current(self) -> _engines.Binding:
        """The running loop's engine and transport; raises once the store is closed."""
        if self._closed:
            raise _closed_error()
        return self._bindings.current()

    @property
    def _transport(self) -> Transport:
        return self._current().transport

    @property
    def _read_engine(self) -> AsyncEngine | None:
        return self._bindings.first.read_engine

    @property
    def records(self) -> SessionRecords:
        """Owner, title, metadata and expiry of the sessions, on the running loop's engine.

        Its calls pass the store's gate, as the four operations do: ``StoreClosedError`` once
        closed, the schema check of ``check_schema=True``, ``:memory:`` taken in turn.
        """
        return self._records_on(self._current())

    def _records_on(self, binding: _engines.Binding) -> SessionRecords:
        wrote = None if self._replica is None else partial(self._wrote, None)
        core = binding.transport.core
        return SessionRecords(
            binding.engine,
            self.sessions,
            self.messages,
            archive=self.archive_table,
            usage=self.usage_table,
            wrote=wrote,
            connect=core.connect,
            write=binding.transport.write_core,
        )

    @property
    def ledger(self) -> UsageLedger:
        """The usage ledger (``record_usage``, ``usage``), on the running loop's engine."""
        return UsageLedger(self._current().engine, self.usage_table, self.sessions)

    def _admin(self, binding: _engines.Binding | None = None) -> StoreAdmin:
        transport = (binding or self._current()).transport
        return StoreAdmin(
            self.sessions,
            self.messages,
            dialect_name=family_of(self._bindings.first.engine.dialect).value,
            connect=transport.core.connect,
            begin=transport.core.begin,
            write=transport.write_core,
            archive=self.archive_table,
        )

    async def _gate(self) -> None:
        """Run before every checkout: refuse once closed; check the schema once, if asked."""
        if self._closed:
            raise _closed_error()
        if self._schema_pending:
            await self._check_schema()

    async def _check_schema(self) -> None:
        async with self._schema_locks.get():
            if not self._schema_pending:
                return
            # Imported here: only stores that check pay for importing Alembic.
            from agent_session_store.migrate import check

            await check(
                self.engine, sessions_table=self.sessions_table, messages_table=self.messages_table
            )
            self._schema_pending = False

    def _cannot_connect(
        self, exc: BaseException, engine: AsyncEngine | None = None
    ) -> DatabaseConnectionError:
        # Drivers fail in their own words (a bare OSError from asyncpg); say it in ours.
        url = (engine or self._bindings.first.engine).url.render_as_string(hide_password=True)
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        return DatabaseConnectionError(
            f"cannot connect to the database at {url}: {type(cause).__name__}: {cause}; "
            "check that the database server is running and reachable (for SQLite: that "
            "the file can be opened), then call again: the same store reconnects by itself"
        )

    # -- properties -------------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        """The async engine this store runs on (in the running event loop, if any).

        A store that made its engine makes one per event loop it is used from; outside any
        loop this is the first.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._bindings.first.engine
        if self._closed:
            return self._bindings.first.engine
        return self._bindings.current().engine

    @property
    def retry_stats(self) -> RetryStats:
        """What this store's write retries did: calls retried, attempts, longest wait."""
        return self._retry.stats

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

    @property
    def archive_table(self) -> Table:
        """The archive ``Table`` (items an ``archive=`` store removed)."""
        return self.AgentArchivedItem.__table__  # type: ignore[attr-defined,no-any-return]

    @property
    def keys(self) -> Table:
        """The idempotency keys ``Table`` (``<messages_table>_keys``)."""
        return self.AgentKey.__table__  # type: ignore[attr-defined,no-any-return]

    @property
    def usage_table(self) -> Table:
        """The usage ledger's ``Table`` (``<sessions_table>_usage``)."""
        return self.AgentUsage.__table__  # type: ignore[attr-defined,no-any-return]

    def __repr__(self) -> str:
        url = self._bindings.first.engine.url.render_as_string(hide_password=True)
        return (
            f"<SessionStore url={url!r} sessions_table={self.sessions_table!r} "
            f"messages_table={self.messages_table!r}>"
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def create_tables(self) -> None:
        """Create this store's tables (sessions, messages, archive, idempotency keys) if missing.

        Idempotent, and safe when many tasks or processes call it at once. Meant for tests and
        quick starts; production schemas are managed with the shipped Alembic migrations.
        """
        transport = self._transport
        if self._tables_ready:
            return
        async with self._tables_locks.get():
            if self._tables_ready:
                return
            tables = [self.sessions, self.messages, self.archive_table, self.keys, self.usage_table]
            for attempt in range(MAX_ATTEMPTS):
                try:
                    async with transport.core.begin() as conn:
                        await conn.run_sync(self.metadata.create_all, tables=tables)
                    break
                except DBAPIError:
                    # Another process created a table between our check and our CREATE.
                    if attempt == MAX_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
            self._tables_ready = True

    async def close(self) -> None:
        """Close the store for good; dispose its engines if it made them.

        An engine passed in is left alone (it is the host's). Afterwards every operation of
        the store and of its sessions raises ``StoreClosedError``; calling ``close`` again
        does nothing.
        """
        if self._closed:
            closing = self._closing
            if closing is not None and closing.get_loop() is asyncio.get_running_loop():
                await asyncio.shield(closing)  # a concurrent close: wait for the first one
            return
        self._closed = True
        if self._owns_engine:
            self._closing = asyncio.ensure_future(self._dispose_all())
            await asyncio.shield(self._closing)

    async def _dispose_all(self) -> None:
        await self._bindings.dispose_all()
        if self._replica is not None:
            await self._replica.bindings.dispose_all()

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
        if self._closed:
            raise _closed_error()
        from agent_session_store.session import SQLAlchemySession

        return SQLAlchemySession(
            session_id, store=self, session_settings=session_settings, user_id=user_id, ttl=ttl
        )

    def scope(self, user_id: str | None = None, ttl: timedelta | float | None = UNSET) -> Scope:
        """What a handle with this owner and time to live is bound to."""
        if user_id is not None:
            check_user_id(user_id)  # same rules as ids: a str of 1 to 255 characters
        seconds = self.ttl if ttl is UNSET else (None if ttl is None else seconds_of(ttl))
        return Scope(user_id, seconds, archive=self._archive is not None)

    def _scope_of(self, scope: Scope | None) -> Scope:
        return self._default_scope if scope is None else scope

    async def _check_packet(self, run: Runner, encoded: list[str], session_id: str) -> None:
        if self._max_packet is None:
            found = await run.rows(self._statements.max_packet, {})
            self._max_packet = int(found[0][0])
        _dialect.check_packet_size(encoded, session_id, self._max_packet)

    # -- the four operations, by session id -------------------------------------------------

    async def get_items(
        self, session_id: str, limit: int | None = None, *, scope: Scope | None = None
    ) -> list[Any]:
        """All items of ``session_id`` in order, or the latest ``limit`` in chronological order."""
        if self._closed:
            raise _closed_error()
        check_session_id(session_id)
        limit = check_limit(limit)
        scope = self._scope_of(scope)
        if not scope.plain:
            return await self._scoped.get_items(session_id, limit, scope)
        if limit == 0:
            return []
        if limit is not None:
            tail = lambda run: self._tail(run, session_id, limit)  # noqa: E731
            return await self._read(session_id, lambda on: on.transport.read(tail))
        st, warn = self._statements, self._warn_corrupt(session_id)
        params = {"sid": session_id, "lim": HEAD + 1}
        found = await self._read(
            session_id, lambda on: on.transport.read(lambda run: run.rows(st.select_head, params))
        )
        head = [row[0] for row in found]
        del found
        if len(head) <= HEAD:
            return decode_rows(head, warn)
        del head
        # A long history: stream it, decoding page by page, so that its JSON text and its
        # decoded items are never in memory at once (one statement, one consistent snapshot).
        async def stream(run: Runner) -> list[Any]:
            items: list[Any] = []
            async for page in run.pages(st.stream_all, {"sid": session_id}, PAGE):
                items += decode_rows((row[0] for row in page), warn)
            return items

        return await self._read(session_id, lambda on: on.transport.read(stream, cursor=True))

    async def _tail(self, run: Runner, session_id: str, limit: int) -> list[Any]:
        rows = await run.rows(self._statements.select_tail, {"sid": session_id, "lim": limit})
        undecodable: list[str] = []
        items = decode_rows((row[0] for row in reversed(rows)), undecodable.append)
        if not undecodable:
            return items
        # Undecodable rows are skipped and the limit counts valid items: read again, with
        # ids, so that the read can go further back (and warn about what it skips).
        return await self._tail_paged(run, session_id, limit)

    async def _tail_paged(self, run: Runner, session_id: str, limit: int) -> list[Any]:
        st, warn = self._statements, self._warn_corrupt(session_id)
        wanted = limit
        rows = await run.rows(st.select_tail_ids, {"sid": session_id, "lim": wanted})
        items = decode_rows((row[1] for row in reversed(rows)), warn)
        while len(items) < limit and len(rows) == wanted:
            wanted = limit - len(items)
            params = {"sid": session_id, "lim": wanted, "before": rows[-1][0]}
            rows = await run.rows(st.select_tail_before, params)
            items[:0] = decode_rows((row[1] for row in reversed(rows)), warn)
        return items

    async def add_items(
        self,
        session_id: str,
        items: list[Any],
        *,
        ensure_ascii: bool = False,
        scope: Scope | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Append ``items`` to ``session_id`` atomically, creating the session if needed.

        ``ensure_ascii``: store ASCII-only JSON (JSON unicode escapes), as the SDK's
        ``SQLAlchemySession`` does by default; else UTF-8 text.

        ``idempotency_key``: names this batch (1 to 255 characters). A batch whose key is
        already stored for the session is not stored again, and the call succeeds; keys are
        kept until :meth:`purge_keys` removes them or the session is deleted. Without one,
        the call gets a key of its own (unless the store has ``idempotency_keys=False``), so
        a connection lost at the commit point is settled by sending the batch again.
        """
        if self._closed:
            raise _closed_error()
        check_session_id(session_id)
        key = self._key_of(idempotency_key)
        encoded = encode_items(items, ensure_ascii=ensure_ascii)
        if not encoded:
            return
        scope = self._scope_of(scope)
        if not scope.plain:
            await self._scoped.add_items(session_id, encoded, scope, key)
            return
        st = self._statements
        append = st.append if key is None else st.append_keyed
        if append is not None:
            one = {"sid": session_id, "texts": encoded, "key": key}
            await self._write_batch(
                lambda run: run.run(append, one), WriteShape.ONE_STATEMENT, session_id, key
            )
            return
        rows = [{"sid": session_id, "text": text} for text in encoded]
        params: dict[str, Any] | list[dict[str, Any]] = rows[0] if len(rows) == 1 else rows

        touch, one = st.touch, {"sid": session_id}
        assert touch is not None

        async def add(run: Runner) -> None:
            if st.checks_packets:
                if self._max_packet is None:
                    found = await run.rows(st.max_packet, {})
                    self._max_packet = int(found[0][0])
                _dialect.check_packet_size(encoded, session_id, self._max_packet)
            if await touched(run, touch, one, mysql=st.checks_packets) is not RowState.LIVE:
                # Expired: this write starts the session afresh (see _expiry).
                await run.run(st.delete_messages, one)
                await run.run(st.reset, one)
            if key is not None:
                await run.run(st.insert_key, {"sid": session_id, "key": key})
            await run.run(st.insert, params)

        await self._write_batch(add, WriteShape.SEVERAL_STATEMENTS, session_id, key)

    def _key_of(self, given: str | None) -> str | None:
        if given is not None:
            return _idempotency.check_key(given)
        return _idempotency.new_key() if self.idempotency_keys else None

    async def _write_batch(
        self, add: Callable[[Runner], Any], shape: WriteShape, session_id: str, key: str | None
    ) -> None:
        """Write a batch; with a key, until it is known stored once (see ``_idempotency``)."""
        if key is None:
            await self._write(session_id, add, shape)
            return
        st, found = self._statements, {"sid": session_id, "key": key}

        async def write() -> None:
            await self._write(session_id, add, shape)

        async def stored() -> bool:
            return bool(await self._transport.read(lambda run: run.rows(st.key_stored, found)))

        await _idempotency.write_once(write, stored, key, session_id)

    async def purge_keys(
        self, *, older_than: datetime | timedelta, batch_size: int = 1000
    ) -> int:
        """Delete the idempotency keys written before ``older_than``; return how many.

        A batch whose key is purged is no longer recognised: the same key stores it again.
        Keep keys for longer than any caller retries (a day is plenty); the store's own
        retries after a lost commit take seconds. Deletes ``batch_size`` keys per
        transaction, so it never holds locks for long.
        """
        from agent_session_store._key_purge import purge_keys

        return await purge_keys(
            self._transport, self.keys, older_than=older_than, batch_size=batch_size
        )

    async def pop_item(self, session_id: str, *, scope: Scope | None = None) -> Any | None:
        """Remove and return the newest item of ``session_id``, or None when it has none."""
        if self._closed:
            raise _closed_error()
        check_session_id(session_id)
        scope = self._scope_of(scope)
        if not scope.removes_plainly:
            return await self._scoped.pop_item(session_id, scope)
        shape = (
            WriteShape.ONE_STATEMENT
            if self._statements.pop_returns
            else WriteShape.SEVERAL_STATEMENTS
        )
        while True:
            text = await self._write(session_id, lambda run: self._pop_row(run, session_id), shape)
            if text is PopMiss.EMPTY:
                return None
            if text is PopMiss.TAKEN:
                continue
            decoded = decode_rows([text], self._warn_corrupt(session_id))
            if decoded:
                return decoded[0]
            # A corrupt row was removed; the caller wants the newest readable item.

    async def _pop_row(self, run: Runner, session_id: str) -> str | PopMiss:
        st, params = self._statements, {"sid": session_id}
        if not st.pop_returns:
            found = await run.rows(st.select_newest_locked, params)
            if not found:
                return PopMiss.EMPTY
            await run.run(st.delete_by_id, {"row_id": found[0][0]})
            return str(found[0][1])
        deleted = await run.rows(st.pop, params)
        if deleted:
            return str(deleted[0][0])
        # Nothing deleted: the session is empty, or a concurrent popper took the row we chose.
        if not await run.rows(st.exists, params):
            return PopMiss.EMPTY
        return PopMiss.TAKEN

    async def clear_session(self, session_id: str, *, scope: Scope | None = None) -> None:
        """Delete ``session_id``'s row and all its items."""
        if self._closed:
            raise _closed_error()
        check_session_id(session_id)
        scope = self._scope_of(scope)
        if not scope.removes_plainly:
            await self._scoped.clear_session(session_id, scope)
            return
        st, params = self._statements, {"sid": session_id}

        async def clear(run: Runner) -> None:
            await run.run(st.delete_messages, params)
            await run.run(st.delete_session, params)

        await self._write(session_id, clear, WriteShape.SEVERAL_STATEMENTS)

    # -- history operations (_history, _archive) --------------------------------------------

    async def rewind(
        self,
        session_id: str,
        keep: int,
        *,
        return_items: bool = True,
        scope: Scope | None = None,
    ) -> list[Any] | int:
        """Keep the first ``keep`` items of ``session_id``; remove the rest in one transaction.

        Returns the removed items in order, or their number with ``return_items=False``.
        """
        if self._closed:
            raise _closed_error()
        check_session_id(session_id)
        check_count(keep, "keep")
        scope = self._scope_of(scope)
        return await self._history.rewind(session_id, keep, bool(return_items), scope)

    async def replace_items(
        self,
        session_id: str,
        items: list[Any],
        *,
        ensure_ascii: bool = False,
        scope: Scope | None = None,
    ) -> None:
        """Swap the whole history of ``session_id`` for ``items``, in one transaction."""
        if self._closed:
            raise _closed_error()
        check_session_id(session_id)
        encoded = encode_items(items, ensure_ascii=ensure_ascii)
        await self._history.replace(session_id, encoded, self._scope_of(scope))

    async def fork(
        self,
        source_id: str,
        new_id: str,
        *,
        upto: int | None = None,
        user_id: str | None = None,
        title: str | None = None,
    ) -> SQLAlchemySession:
        """Copy ``source_id``'s history, or its first ``upto`` items, to a new session.

        One transaction, copied in the database (``INSERT … SELECT``, order kept). The new
        session records ``forked_from`` (the source and the id of the last item copied);
        it takes the source's owner, title and metadata unless ``user_id``/``title`` say
        otherwise. With ``user_id``, the source must be that user's (else
        ``SessionOwnershipError``) and the fork is owned by them.

        Returns:
            The new session's handle (bound to ``user_id``).

        Raises:
            SessionNotFoundError: ``source_id`` does not exist, or has expired (it reads as
                empty and ``info`` reports it missing, so its stale history is not copied).
            SessionExistsError: ``new_id`` exists already; nothing was written.
        """
        if self._closed:
            raise _closed_error()
        await self._history.fork(source_id, new_id, upto=upto, user_id=user_id, title=title)
        return self.session(new_id, user_id=user_id)

    async def restore(self, session_id: str, *, user_id: str | None = None) -> int:
        """Undo the newest archiving operation on ``session_id`` (clear, replace, rewind, pop).

        The session becomes exactly what it was just before that operation; items written
        since move to the archive. Works whether or not this store archives (the archive
        table is there either way). Returns how many items came back (0: nothing archived).

        Raises:
            SessionOwnershipError: ``user_id`` is given and the session is another user's.
        """
        if self._closed:
            raise _closed_error()
        if user_id is not None:
            check_user_id(user_id)
        return await self._archiver.restore(session_id, user_id)

    async def purge_archive(self, *, older_than: datetime | timedelta | None = None) -> int:
        """Delete archived items archived before ``older_than`` (default: the retention).

        Returns how many were deleted.
        """
        if self._closed:
            raise _closed_error()
        return await self._archiver.purge(older_than)

    @staticmethod
    def _warn_corrupt(session_id: str) -> Callable[[str], None]:
        def warn(text: str) -> None:
            logger.warning(
                "skipping an item of session %r that is not valid JSON (%d characters)",
                session_id,
                len(text) if isinstance(text, str) else -1,
            )

        return warn

    # -- store-wide operations (admin.StoreAdmin) -------------------------------------------

    async def list_sessions(self, **filters: Any) -> RecordPage:
        """A page of session records; filters as :meth:`SessionRecords.list_sessions`."""
        return await self._read(None, lambda on: self._records_on(on).list_sessions(**filters))

    async def info(self, session_id: str, user_id: str | None = None) -> SessionRecord | None:
        """The record of ``session_id``; see :meth:`SessionRecords.info`."""
        return await self._read(
            session_id, lambda on: self._records_on(on).info(session_id, user_id)
        )

    async def purge_expired(self, *, batch_size: int = 500, dry_run: bool = False) -> Removed:
        """Delete expired sessions and their items; see :meth:`SessionRecords.purge_expired`.

        Their archived items go too, and, on a store with a retention, every archived item
        older than it.
        """
        removed = await self.records.purge_expired(batch_size=batch_size, dry_run=dry_run)
        retention = self._archiver.retention
        if not dry_run and retention is not None and retention != timedelta.max:
            await self._archiver.purge()
        return removed

    async def erase_user(
        self, user_id: str, *, batch_size: int = 500, dry_run: bool = False
    ) -> Removed:
        """Delete every session and item of ``user_id``, archived items included.

        See :meth:`SessionRecords.erase_user`.
        """
        removed = await self.records.erase_user(user_id, batch_size=batch_size, dry_run=dry_run)
        if not dry_run:
            await self._archiver.purge_user(user_id)
        return removed

    async def record_usage(
        self,
        session_id: str,
        result_or_usage: Any,
        *,
        model: str | None = None,
        user_id: str | None = None,
        created_at: datetime | None = None,
    ) -> RunUsage:
        """Write one usage row for a run of ``session_id``; see :meth:`UsageLedger.record`.

        ``created_at`` (an aware datetime) backfills a run recorded elsewhere; by default
        the row takes the database's clock, like every other timestamp.
        """
        return await self.ledger.record(
            session_id, result_or_usage, model=model, user_id=user_id, created_at=created_at
        )

    async def usage(
        self,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: GroupBy | None = None,
    ) -> list[UsageTotals]:
        """Sums of the usage ledger, grouped in SQL; see :meth:`UsageLedger.totals`."""
        return await self.ledger.totals(
            user_id=user_id, session_id=session_id, since=since, until=until, group_by=group_by
        )

    async def count_items(self, session_id: str) -> int:
        """How many items ``session_id`` holds (0 for an unknown session)."""
        return await self._read(session_id, lambda on: self._admin(on).count_items(session_id))

    async def session_info(self, session_id: str) -> SessionInfo | None:
        """The session's timestamps and item count, or None if it does not exist."""
        return await self._read(session_id, lambda on: self._admin(on).session_info(session_id))

    async def delete_sessions(
        self, *, older_than: datetime | timedelta, dry_run: bool = False
    ) -> PruneResult:
        """Delete stale sessions and their items; see :meth:`StoreAdmin.delete_sessions`."""
        try:
            return await self._admin().delete_sessions(older_than=older_than, dry_run=dry_run)
        finally:
            self._wrote(None)

    def export_sessions(
        self, session_ids: Iterable[str] | None = None, *, batch_size: int = 1000
    ) -> AsyncIterator[Record]:
        """Every session and its items as records; see :meth:`StoreAdmin.export_sessions`."""
        return self._admin().export_sessions(session_ids, batch_size=batch_size)

    async def import_sessions(
        self,
        records: Iterable[Record] | AsyncIterable[Record],
        *,
        replace: bool = False,
        batch_size: int = 1000,
    ) -> ImportResult:
        """Write exported records into this store; see :meth:`StoreAdmin.import_sessions`."""
        try:
            return await self._admin().import_sessions(
                records, replace=replace, batch_size=batch_size
            )
        finally:
            self._wrote(None)

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


def _closed_error() -> StoreClosedError:
    return StoreClosedError(
        "this SessionStore was closed (await store.close()), and so were its sessions; "
        "nothing was sent. Make a new SessionStore (or session) to use the database again"
    )


def check_async_engine(engine: object) -> None:
    """Refuse a synchronous ``Engine`` where an ``AsyncEngine`` is needed, saying how to fix it."""
    if isinstance(engine, Engine):
        raise ArgumentTypeError(
            f"got a synchronous SQLAlchemy Engine ({engine.url.render_as_string()}); the store "
            "needs an AsyncEngine: use sqlalchemy.ext.asyncio.create_async_engine with an "
            "async driver (postgresql+asyncpg://, mysql+aiomysql://, sqlite+aiosqlite://), "
            "or pass the URL itself"
        )
