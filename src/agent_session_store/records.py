"""Sessions as records: who owns one, what it is called, listing them, expiry and erasure.

:class:`SessionRecords` is the store's component for the sessions table's own columns (owner,
title, metadata, expiry). It reads and writes through SQLAlchemy Core on the store's engine;
none of it is on the hot path of the four ``Session`` operations. Every owner check is part of
the statement or transaction that does the work, never a separate read that could race.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    Integer,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agent_session_store import _dialect, _record_sql, _usage_sql
from agent_session_store._cursor import decode_cursor, encode_cursor
from agent_session_store._family import is_sqlite
from agent_session_store._json import check_session_id, check_user_id
from agent_session_store.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    SessionOwnershipError,
)
from agent_session_store.models import session_index_name, utcnow

T = TypeVar("T")
Order = Literal["newest", "oldest"]
#: Sessions per transaction when purging or erasing: each batch holds its row locks briefly.
DEFAULT_BATCH = 500
_ATTEMPTS = 8


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: "Leave this field as it is", for :meth:`SessionRecords.update`.
UNSET: Any = _Unset()


@dataclass(frozen=True)
class SessionRecord:
    """A session's record: its columns and how many items it holds."""

    session_id: str
    user_id: str | None
    title: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    item_count: int
    #: ``store.fork`` made this session from that one...
    forked_from_session_id: str | None = None
    #: ...copying its items up to this id (None: it copied none).
    forked_from_item_id: int | None = None

    @property
    def forked_from(self) -> tuple[str, int | None] | None:
        """``(source session id, last item id copied)`` for a fork, else None."""
        if self.forked_from_session_id is None:
            return None
        return self.forked_from_session_id, self.forked_from_item_id


@dataclass(frozen=True)
class RecordPage:
    """A page of :class:`SessionRecord` and the cursor of the next page (None on the last)."""

    sessions: list[SessionRecord]
    next_cursor: str | None


@dataclass(frozen=True)
class Removed:
    """How many sessions and items a purge or an erasure deleted (or, dry, would delete).

    ``usage_rows``: rows of the usage ledger an erasure deleted (a purge keeps them).
    """

    sessions: int
    items: int
    usage_rows: int = 0


Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
Write = Callable[[Callable[[AsyncConnection], Awaitable[T]]], Awaitable[T]]


class SessionRecords:
    """Records of one store's sessions (``store.records``).

    Args:
        engine: The store's engine.
        sessions: The sessions table.
        messages: The messages table.
        usage: The usage ledger's table, which :meth:`erase_user` empties of the user's rows.
        wrote: Called after each write ends (the store's replica reads wait for it).
        archive: The archive table: removing a session removes its archived items too.
        connect: Where reads get their connection; the store passes its gate (closed store,
            schema check, the ``:memory:`` connection taken in turn). Default: the engine's.
        write: Runs a write in one transaction with the store's retries and SQLite writer
            lock. Default: ``engine.begin()``, retried after server-side rollbacks.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        sessions: Table,
        messages: Table,
        archive: Table | None = None,
        usage: Table | None = None,
        wrote: Callable[[], None] | None = None,
        *,
        connect: Connect | None = None,
        write: Any = None,
    ) -> None:
        self._engine, self._s, self._m, self._usage = engine, sessions, messages, usage
        #: The archive table: removing a session removes its archived items too.
        self._a = archive
        self._wrote = wrote
        self._dialect = engine.dialect
        self._connect: Connect = connect or engine.connect
        self._write_with: Any = write

    # -- one session ----------------------------------------------------------------------

    async def info(self, session_id: str, user_id: str | None = None) -> SessionRecord | None:
        """The record of ``session_id``, or None if it has no row or has expired.

        Raises:
            SessionOwnershipError: ``user_id`` is given and does not own the session.
        """
        check_session_id(session_id)
        if user_id is not None:
            check_user_id(user_id)
        s = self._s
        stmt = self._records_query(with_now=True).where(s.c.session_id == session_id)
        async with self._connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        record = _record(row)
        refuse_other_owner(session_id, user_id, record.user_id)
        if record.expires_at is not None and record.expires_at <= _now_of(row):
            return None
        return record

    async def update(
        self,
        session_id: str,
        user_id: str | None = None,
        *,
        title: str | None = UNSET,
        metadata: dict[str, Any] | None = None,
        expires_at: datetime | None = UNSET,
        ttl: int | None = None,
    ) -> None:
        """Set the title, patch the metadata, or set the expiry of ``session_id``.

        The session is created if it has no row yet (owned by ``user_id``). ``metadata`` is a
        patch applied in the database: each key given replaces that key's value, a key given
        ``None`` is removed, other keys stay, so concurrent patches of different keys all
        land. ``title=None`` or ``expires_at=None`` clears the field. An update is a write:
        with ``ttl`` (seconds; a handle's sliding time to live) and no ``expires_at`` it moves
        the expiry to now + ttl, and on an expired session it starts the session afresh
        first (old items, title and metadata deleted), as ``add_items`` does.

        Raises:
            SessionOwnershipError: ``user_id`` is given and does not own the session; nothing
                was changed.
            InvalidMetadataError: a bad title or metadata patch; nothing was changed.
        """
        check_session_id(session_id)
        if user_id is not None:
            check_user_id(user_id)
        values: dict[str, Any] = {"updated_at": utcnow()}
        if title is not UNSET:
            values["title"] = _record_sql.check_title(title)
        if metadata is not None:
            patch = _record_sql.check_patch(metadata)
            values["metadata"] = _record_sql.patched(self._dialect, self._s.c.metadata, patch)
        if expires_at is not UNSET:
            if expires_at is not None and (
                not isinstance(expires_at, datetime) or expires_at.tzinfo is None
            ):
                raise ArgumentTypeError("expires_at must be a timezone-aware datetime or None")
            values["expires_at"] = expires_at
        elif ttl is not None:
            values["expires_at"] = _record_sql.expires_after(bindparam("ttl", ttl, Integer))
        s, m = self._s, self._m
        mine = s.c.session_id == session_id
        expired = case((s.c.expires_at <= utcnow(), 1), else_=0)
        state = select(s.c.user_id, expired).where(mine)
        if not is_sqlite(self._dialect):  # SQLite: the write transaction holds the file
            state = state.with_for_update()
        fresh = {"title": None, "metadata": None, "expires_at": None, "created_at": utcnow()}

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(_record_sql.create_session(self._dialect, s, session_id, user_id))
            # Under the row lock the insert or this read took: this owner and state are final.
            owner, was_expired = (await conn.execute(state)).one()
            refuse_other_owner(session_id, user_id, owner)
            if was_expired:
                await conn.execute(delete(m).where(m.c.session_id == session_id))
                await conn.execute(update(s).where(mine).values(fresh))
            await conn.execute(update(s).where(mine).values(values))

        await self._write(write)

    # -- many sessions --------------------------------------------------------------------

    async def list_sessions(
        self,
        *,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        title_contains: str | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        include_expired: bool = False,
        cursor: str | None = None,
        limit: int = 50,
        order: Order = "newest",
    ) -> RecordPage:
        """A page of session records matching every filter given, by ``updated_at``.

        Keyset pagination on ``(updated_at, session_id)``, served by an index (the one with
        ``user_id`` first when ``user_id`` is given): a page costs the same at any depth and
        any table size, and a session written between two calls never makes a page repeat or
        skip another. Items are never read; ``item_count`` comes from the messages index.

        Args:
            user_id: Only this owner's sessions.
            metadata: Only sessions whose metadata holds each of these keys with that value
                (str, int, float or bool).
            title_contains: Only titles containing this text, ignoring case.
            updated_after: Only sessions updated at or after this aware datetime.
            updated_before: Only sessions updated before this aware datetime.
            include_expired: List expired sessions that are not purged yet, too.
            cursor: ``next_cursor`` of the previous page, with the same filters.
            limit: Sessions per page, at least 1.
            order: ``"newest"`` (most recently updated first) or ``"oldest"``.

        Raises:
            ValueError: a bad ``limit``, ``order`` or cursor; ``InvalidMetadataError`` for a
                bad metadata filter.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgumentError(f"limit must be a positive int, got {limit!r}")
        if order not in ("newest", "oldest"):
            raise InvalidArgumentError(f"order must be 'newest' or 'oldest', got {order!r}")
        if user_id is not None:
            check_user_id(user_id)
        s = self._s
        # SQLite keeps timestamps as text, and files other tools wrote differ in format: page
        # on the stored text itself, so the cursor compares exactly as ORDER BY sorts.
        raw = is_sqlite(self._dialect)
        when: Any = type_coerce(s.c.updated_at, String()) if raw else s.c.updated_at
        stmt = self._paged(self._records_query(when), user_id)
        if metadata:
            stmt = stmt.where(_record_sql.contains(self._dialect, s.c.metadata, metadata))
        if title_contains:
            # SQLite lowers ASCII letters only: other letters match as written.
            wanted = title_contains.lower()
            stmt = stmt.where(func.lower(s.c.title).contains(wanted, autoescape=True))
        if updated_after is not None:
            stmt = stmt.where(s.c.updated_at >= _aware(updated_after, "updated_after"))
        if updated_before is not None:
            stmt = stmt.where(s.c.updated_at < _aware(updated_before, "updated_before"))
        if not include_expired:
            stmt = stmt.where(or_(s.c.expires_at.is_(None), s.c.expires_at > utcnow()))
        newest = order == "newest"
        if cursor is not None:
            after_when, after_id = decode_cursor(cursor, raw)
            if newest:
                later = or_(when < after_when, and_(when == after_when, s.c.session_id < after_id))
            else:
                later = or_(when > after_when, and_(when == after_when, s.c.session_id > after_id))
            stmt = stmt.where(later)
        keys = (when, s.c.session_id)
        stmt = stmt.order_by(*(key.desc() if newest else key.asc() for key in keys))
        async with self._connect() as conn:
            rows = (await conn.execute(stmt.limit(limit + 1))).all()
        page = [_record(row) for row in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        next_cursor = None if last is None else encode_cursor(last.sort_key, last.session_id)
        return RecordPage(page, next_cursor)

    def listing_query(self, **filters: Any) -> Select[Any]:
        """The first page's SELECT for these :meth:`list_sessions` filters (for EXPLAIN)."""
        s = self._s
        stmt = self._paged(self._records_query(), filters.get("user_id"))
        stmt = stmt.where(or_(s.c.expires_at.is_(None), s.c.expires_at > utcnow()))
        return stmt.order_by(s.c.updated_at.desc(), s.c.session_id.desc()).limit(51)

    async def purge_expired(
        self, *, batch_size: int = DEFAULT_BATCH, dry_run: bool = False
    ) -> Removed:
        """Delete every expired session and its items, ``batch_size`` sessions per transaction.

        Safe to run from several processes at once (on PostgreSQL and MySQL/MariaDB each batch
        skips rows another purger holds; every delete re-checks the expiry, so a session is
        counted by the one purge that deleted it and one written back to life in between is
        kept) and resumable: stopping half-way leaves whole sessions, the next run goes on.
        """
        s = self._s
        return await self._remove(s.c.expires_at <= utcnow(), batch_size, dry_run, skip_locked=True)

    async def erase_user(
        self, user_id: str, *, batch_size: int = DEFAULT_BATCH, dry_run: bool = False
    ) -> Removed:
        """Delete every session of ``user_id``, their items and usage rows, in bounded batches.

        Usage rows go first (the user's, and any on the user's sessions), then the sessions,
        then once more the user's usage rows, which catches runs recorded meanwhile.
        """
        check_user_id(user_id)
        usage = self._usage
        if usage is None:
            return await self._remove(self._s.c.user_id == user_id, batch_size, dry_run)
        check_batch_size(batch_size)
        erase = _usage_sql.UserUsage(self._engine, usage, self._s, user_id, self._write)
        rows = await erase.remove(batch_size, dry_run)
        removed = await self._remove(self._s.c.user_id == user_id, batch_size, dry_run)
        if not dry_run:
            rows += await erase.remove(batch_size, dry_run)
        return Removed(removed.sessions, removed.items, rows)

    # -- internals ------------------------------------------------------------------------

    def _paged(self, stmt: Select[Any], user_id: str | None) -> Select[Any]:
        s = self._s
        suffix = "updated" if user_id is None else "user_updated"
        if user_id is not None:
            stmt = stmt.where(s.c.user_id == user_id)
        if _dialect.is_mysql(self._dialect):
            # MariaDB 10.11 measured: with any filter, or a column the index lacks, it sorts
            # the whole table (5,000 rows: a scan and filesort) rather than walk the index
            # for a LIMIT of 51. The keyset index is the plan for every page: say so.
            name = self._dialect.identifier_preparer.quote(session_index_name(s.name, suffix))
            stmt = stmt.with_hint(s, f"FORCE INDEX ({name})", self._dialect.name)
        return stmt

    def _records_query(self, sort_key: Any = None, *, with_now: bool = False) -> Select[Any]:
        s, m = self._s, self._m
        count = select(func.count(m.c.id)).where(m.c.session_id == s.c.session_id)
        columns = [
            s.c.session_id,
            s.c.user_id,
            s.c.title,
            s.c.metadata,
            s.c.created_at,
            s.c.updated_at,
            s.c.expires_at,
            count.scalar_subquery().label("item_count"),
            s.c.forked_from_session_id,
            s.c.forked_from_item_id,
        ]
        if sort_key is not None:
            columns.append(sort_key.label("sort_key"))
        if with_now:  # the database's clock, which expiry is judged by
            columns.append(utcnow().label("now"))
        return select(*columns)

    async def _remove(
        self, condition: Any, batch_size: int, dry_run: bool, *, skip_locked: bool = False
    ) -> Removed:
        check_batch_size(batch_size)
        s, m = self._s, self._m
        if dry_run:
            joined = s.outerjoin(m, m.c.session_id == s.c.session_id)
            stmt = select(func.count(func.distinct(s.c.session_id)), func.count(m.c.id))
            async with self._connect() as conn:
                found = (await conn.execute(stmt.select_from(joined).where(condition))).one()
            return Removed(int(found[0]), int(found[1]))
        pick = select(s.c.session_id).where(condition).order_by(s.c.session_id).limit(batch_size)
        if not is_sqlite(self._dialect):
            pick = pick.with_for_update(skip_locked=skip_locked)
        still = select(s.c.session_id).where(condition)

        async def batch(conn: AsyncConnection) -> tuple[int, int, int]:
            ids = list((await conn.execute(pick)).scalars())
            if not ids:
                return 0, 0, 0
            # Re-checked in each DELETE: another purger may have taken a session first.
            items = await conn.execute(
                delete(m).where(m.c.session_id.in_(still.where(s.c.session_id.in_(ids))))
            )
            gone = await conn.execute(delete(s).where(s.c.session_id.in_(ids), condition))
            if self._a is not None:
                a = self._a
                kept = select(s.c.session_id).where(s.c.session_id == a.c.session_id)
                await conn.execute(delete(a).where(a.c.session_id.in_(ids), ~kept.exists()))
            return len(ids), gone.rowcount, items.rowcount

        sessions = items = 0
        while True:
            picked, gone, removed = await self._write(batch)
            sessions, items = sessions + gone, items + removed
            if picked < batch_size:
                return Removed(sessions, items)

    async def _write(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        try:
            if self._write_with is not None:
                result: T = await self._write_with(operation)
                return result
            return await write_retrying(self._engine, operation)
        finally:
            if self._wrote is not None:
                self._wrote()



async def write_retrying(
    engine: AsyncEngine, operation: Callable[[AsyncConnection], Awaitable[T]]
) -> T:
    """Run ``operation`` in a transaction, again after deadlocks and serialization failures."""
    for attempt in range(_ATTEMPTS):
        try:
            async with engine.begin() as conn:
                return await operation(conn)
        except DBAPIError as exc:
            if attempt == _ATTEMPTS - 1 or not _dialect.is_retryable(exc):
                raise
            await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise AssertionError("unreachable")


def check_batch_size(batch_size: object) -> None:
    """Refuse a ``batch_size`` that is not a positive int."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")


def refuse_other_owner(session_id: str, wanted: str | None, owner: str | None) -> None:
    """Raise ``SessionOwnershipError`` when a handle of ``wanted`` meets a session of ``owner``."""
    if wanted is None or owner == wanted:
        return
    whose = "no user (it was created without user_id)" if owner is None else "another user"
    raise SessionOwnershipError(
        f"session {session_id!r} belongs to {whose}, not to user {wanted!r}; nothing was read "
        "or changed. Use a handle of the session's owner, or one without user_id for "
        "administrative access"
    )


def _record(row: Any) -> SessionRecord:
    metadata = row.metadata
    if isinstance(metadata, str):  # MariaDB returns JSON columns as text on some drivers
        metadata = json.loads(metadata)
    return SessionRecord(
        row.session_id,
        row.user_id,
        row.title,
        dict(metadata or {}),
        row.created_at,
        row.updated_at,
        row.expires_at,
        int(row.item_count),
        row.forked_from_session_id,
        None if row.forked_from_item_id is None else int(row.forked_from_item_id),
    )


def _now_of(row: Any) -> datetime:
    now: datetime = row.now
    return now


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidArgumentError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value
