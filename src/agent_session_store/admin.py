"""Store-level operations: list, count, prune, and streaming export and import.

:class:`StoreAdmin` is a component of :class:`~agent_session_store.SessionStore` (which offers
its methods under the same names), over the store's Core executor: these act on many sessions
at once, where the ``Session``-protocol calls act on one. Export and import
stream rows in batches, so a history larger than memory moves through in constant space.

Exported records are plain JSON-ready dicts, in session order, each session's items following
its header::

    {"session": "user-42", "created_at": "2025-01-01T09:00:00+00:00", "updated_at": "..."}
    {"item": {"role": "user", "content": "Hi"}, "created_at": "2025-01-01T09:00:00+00:00"}
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import String, Table, and_, delete, func, insert, or_, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection

from agent_session_store._cursor import decode_cursor, encode_cursor
from agent_session_store._json import check_session_id
from agent_session_store._records import (
    Record,
    as_async,
    header_record,
    is_header,
    item_record,
    parse_header,
    parse_item,
)
from agent_session_store.errors import ArgumentTypeError, InvalidArgumentError

T = TypeVar("T")
Order = Literal["newest", "oldest"]

_BATCH = 500


@dataclass(frozen=True)
class SessionInfo:
    """One session as :meth:`StoreAdmin.list_sessions` reports it."""

    session_id: str
    created_at: datetime
    updated_at: datetime
    item_count: int


@dataclass(frozen=True)
class SessionPage:
    """A page of sessions and the cursor of the next page (None on the last page)."""

    sessions: list[SessionInfo]
    next_cursor: str | None


@dataclass(frozen=True)
class PruneResult:
    """How many sessions and items :meth:`StoreAdmin.delete_sessions` deleted (or would)."""

    sessions: int
    items: int


@dataclass
class ImportResult:
    """What :meth:`StoreAdmin.import_sessions` did, session by session."""

    created: int = 0
    replaced: int = 0
    skipped: int = 0
    items: int = 0


class Writer(Protocol):
    """Runs a write on a Core connection in one transaction, with the store's retry rules."""

    async def __call__(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``operation`` and commit."""
        ...


async def _write_once(
    begin: Callable[[], AbstractAsyncContextManager[AsyncConnection]],
    operation: Callable[[AsyncConnection], Awaitable[T]],
) -> T:
    async with begin() as conn:
        return await operation(conn)


class StoreAdmin:
    """Operations over every session of a pair of tables, through Core connections.

    Args:
        sessions: The sessions table.
        messages: The messages table.
        dialect_name: The engine's dialect family (``_family.Family`` value; ``"sqlite"`` pages
            on stored text).
        connect: Opens a connection (the store's: taken in turn, its schema checked).
        begin: Opens a connection in a transaction committed when the block exits.
        write: Runs a write with retries; by default ``begin`` once.
        archive: The archive table (revision 0003): deleting a session deletes its archived
            items too, as ``erase_user`` and ``purge_expired`` do, so a pruned session
            leaves nothing of its history behind.
    """

    def __init__(
        self,
        sessions: Table,
        messages: Table,
        *,
        dialect_name: str,
        connect: Callable[[], AbstractAsyncContextManager[AsyncConnection]],
        begin: Callable[[], AbstractAsyncContextManager[AsyncConnection]],
        write: Writer | None = None,
        archive: Table | None = None,
    ) -> None:
        self.sessions = sessions
        self.messages = messages
        self.archive = archive
        self._dialect_name = dialect_name
        self._connect = connect
        self._begin = begin
        self._write_core: Any = write or partial(_write_once, begin)

    async def list_sessions(
        self, *, limit: int = 50, cursor: str | None = None, order: Order = "newest"
    ) -> SessionPage:
        """A page of sessions with their item counts, by ``updated_at``.

        Pages are keyset-paginated on ``(updated_at, session_id)``: a session written between
        two calls never makes a page repeat or skip another session.

        Args:
            limit: Sessions per page, at least 1.
            cursor: ``next_cursor`` of the previous page; None for the first page.
            order: ``"newest"`` (most recently updated first) or ``"oldest"``.

        Raises:
            ValueError: a bad ``limit`` or ``order``, or a cursor this method did not make.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgumentError(f"limit must be a positive int, got {limit!r}")
        if order not in ("newest", "oldest"):
            raise InvalidArgumentError(f"order must be 'newest' or 'oldest', got {order!r}")
        s, m = self.sessions, self.messages
        # SQLite keeps timestamps as text, and files written by other tools (the SDK writes
        # "YYYY-MM-DD HH:MM:SS") differ in format from ours: page on the stored text itself,
        # so the cursor compares exactly as ORDER BY sorts.
        raw = self._dialect_name == "sqlite"
        when: Any = type_coerce(s.c.updated_at, String()) if raw else s.c.updated_at
        count = select(func.count(m.c.id)).where(m.c.session_id == s.c.session_id)
        stmt = select(
            s.c.session_id, s.c.created_at, s.c.updated_at, count.scalar_subquery(), when
        )
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
        page = [SessionInfo(row[0], row[1], row[2], int(row[3])) for row in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        next_cursor = None if last is None else encode_cursor(last[4], last[0])
        return SessionPage(page, next_cursor)

    async def count_items(self, session_id: str) -> int:
        """How many items ``session_id`` holds (0 for an unknown session)."""
        check_session_id(session_id)
        m = self.messages
        stmt = select(func.count(m.c.id)).where(m.c.session_id == session_id)
        async with self._connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def session_info(self, session_id: str) -> SessionInfo | None:
        """The session's timestamps and item count, or None if it does not exist."""
        check_session_id(session_id)
        s, m = self.sessions, self.messages
        count = select(func.count(m.c.id)).where(m.c.session_id == s.c.session_id)
        stmt = select(s.c.session_id, s.c.created_at, s.c.updated_at, count.scalar_subquery())
        async with self._connect() as conn:
            row = (await conn.execute(stmt.where(s.c.session_id == session_id))).first()
        return None if row is None else SessionInfo(row[0], row[1], row[2], int(row[3]))

    async def delete_sessions(
        self, *, older_than: datetime | timedelta, dry_run: bool = False
    ) -> PruneResult:
        """Delete every session not updated since ``older_than``, with its (archived) items.

        Args:
            older_than: A timezone-aware cutoff, or an age such as ``timedelta(days=30)``.
            dry_run: Only count what would be deleted.

        Sessions go in batches of 500, one transaction each, locking the rows first so a
        session written to while the prune runs is kept whole. The archived items of each
        deleted session go in the same transaction (``items`` counts only the live ones).
        """
        cutoff = _cutoff(older_than)
        s, m = self.sessions, self.messages
        stale = s.c.updated_at < cutoff
        if dry_run:
            joined = s.outerjoin(m, m.c.session_id == s.c.session_id)
            stmt = select(func.count(func.distinct(s.c.session_id)), func.count(m.c.id))
            async with self._connect() as conn:
                sessions, items = (await conn.execute(stmt.select_from(joined).where(stale))).one()
            return PruneResult(int(sessions), int(items))
        pick = select(s.c.session_id).where(stale).order_by(s.c.session_id).limit(_BATCH)

        async def prune_batch(conn: AsyncConnection) -> tuple[int, int]:
            ids = list((await conn.execute(pick.with_for_update())).scalars())
            if not ids:
                return 0, 0
            items = await conn.execute(delete(m).where(m.c.session_id.in_(ids)))
            gone = await conn.execute(delete(s).where(s.c.session_id.in_(ids), stale))
            if self.archive is not None:  # only of the sessions deleted: a kept row keeps its
                a = self.archive
                kept = select(s.c.session_id).where(s.c.session_id == a.c.session_id)
                await conn.execute(delete(a).where(a.c.session_id.in_(ids), ~kept.exists()))
            return gone.rowcount, items.rowcount

        total_sessions = total_items = 0
        while True:
            sessions, items = await self._write_core(prune_batch)
            total_sessions, total_items = total_sessions + sessions, total_items + items
            if sessions < _BATCH:
                return PruneResult(total_sessions, total_items)

    #: Export the owner, title, metadata and expiry columns (tables at revision 0002 or later).
    exports_records = True

    def _record_columns(self) -> tuple[Any, ...]:
        s = self.sessions
        return (s.c.user_id, s.c.title, s.c.metadata, s.c.expires_at)

    async def export_sessions(
        self, session_ids: Iterable[str] | None = None, *, batch_size: int = 1000
    ) -> AsyncIterator[Record]:
        """Yield every session (or those in ``session_ids``) and its items as records.

        Rows are streamed from a server-side cursor ``batch_size`` at a time. An item stored
        as text that is not valid JSON is exported as ``{"raw": text, ...}`` so nothing is lost.
        The export holds one connection until the iterator is exhausted or closed.
        """
        s, m = self.sessions, self.messages
        stmt = (
            select(s.c.session_id, s.c.created_at, s.c.updated_at, m.c.message_data,
                   m.c.created_at.label("item_created_at"), m.c.id,
                   *(self._record_columns() if self.exports_records else ()))
            .select_from(s.outerjoin(m, m.c.session_id == s.c.session_id))
            .order_by(s.c.session_id, m.c.id)
            .execution_options(yield_per=batch_size)
        )
        if session_ids is not None:
            stmt = stmt.where(s.c.session_id.in_([check_session_id(i) for i in session_ids]))
        current: str | None = None
        async with self._connect() as conn:
            result = await conn.stream(stmt)
            async for row in result:
                if row[0] != current:
                    current = row[0]
                    yield header_record(row[0], row[1], row[2], *row[6:10])
                if row[5] is not None:
                    yield item_record(row[3], row[4])

    async def import_sessions(
        self,
        records: Iterable[Record] | AsyncIterable[Record],
        *,
        replace: bool = False,
        batch_size: int = 1000,
    ) -> ImportResult:
        """Write exported records into this store, one transaction per session.

        A session that already exists is skipped, so importing the same records twice
        changes nothing; with ``replace=True`` its items and timestamps are overwritten.
        Items are inserted ``batch_size`` at a time as they are read. If the import fails,
        the session being written is rolled back; running it again finishes the rest.

        Raises:
            InvalidRecordError: a record is not a session header or an item after one.
        """
        source = as_async(records)
        s, m = self.sessions, self.messages
        result = ImportResult()
        record = await anext(source, None)
        while record is not None:
            header = parse_header(record)
            session_id = header["session_id"]
            async with self._begin() as conn:
                exists = (await conn.execute(
                    select(s.c.session_id).where(s.c.session_id == session_id).with_for_update()
                )).first() is not None
                write = replace or not exists
                if exists and replace:
                    await conn.execute(delete(m).where(m.c.session_id == session_id))
                    await conn.execute(delete(s).where(s.c.session_id == session_id))
                if write:
                    await conn.execute(insert(s).values(header))
                batch: list[Record] = []
                record = await anext(source, None)
                while record is not None and not is_header(record):
                    if write:
                        batch.append(parse_item(record, session_id))
                        if len(batch) >= batch_size:
                            await conn.execute(insert(m), batch)
                            result.items += len(batch)
                            batch = []
                    record = await anext(source, None)
                if batch:
                    await conn.execute(insert(m), batch)
                    result.items += len(batch)
            if not write:
                result.skipped += 1
            elif exists:
                result.replaced += 1
            else:
                result.created += 1
        return result


def _cutoff(older_than: datetime | timedelta) -> datetime:
    if isinstance(older_than, timedelta):
        return datetime.now(timezone.utc) - older_than
    if isinstance(older_than, datetime):
        if older_than.tzinfo is None:
            raise InvalidArgumentError("older_than is a naive datetime; pass a timezone-aware one")
        return older_than
    raise ArgumentTypeError(
        f"older_than must be a datetime or timedelta, not {type(older_than).__name__}"
    )
