"""Editing a history: ``rewind``, ``replace_items`` and ``fork``, each one transaction.

Every operation first locks the session row (``SELECT … FOR UPDATE``; SQLite's write
transaction holds the whole file), the lock every append takes before it draws an id. So a
concurrent ``add_items`` lands wholly before or wholly after, and the rows an operation
reads are the rows it deletes: the ones it removes are also locked (``FOR UPDATE``), so a
concurrent popper gets each item or this operation does, never both. The owner check of a
handle with ``user_id`` reads that same locked row. Off the hot path: Core, through the
store's write funnel (retries, all-or-nothing cancellation, SQLite's writer lock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    bindparam,
    delete,
    func,
    insert,
    literal,
    null,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from agent_session_store import _dialect
from agent_session_store._expiry import alive
from agent_session_store._family import is_sqlite
from agent_session_store._json import check_session_id, check_user_id, decode_rows
from agent_session_store._record_sql import expires_after
from agent_session_store._scoped import Scope, check_state
from agent_session_store.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    SessionExistsError,
    SessionNotFoundError,
)
from agent_session_store.records import refuse_other_owner


def check_count(value: object, what: str) -> int:
    """``value`` if it is an int >= 0, else the error that says so."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{what} must be an int >= 0, not {type(value).__name__}")
    if value < 0:
        raise InvalidArgumentError(f"{what} must be >= 0, got {value}")
    return value


class History:
    """The history operations of one store (``store._history``)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        s, m = store.sessions, store.messages
        self._locks = not is_sqlite(store.engine.dialect)
        self._mysql = _dialect.is_mysql(store.engine.dialect)
        sid = bindparam("sid", type_=s.c.session_id.type)
        after = bindparam("after", type_=BigInteger)
        last = bindparam("last", type_=BigInteger)
        ordered = select(m.c.id).where(m.c.session_id == sid).order_by(m.c.id)
        #: The id of the item at 0-based position ``skip``: the last one a rewind keeps.
        self.nth_id = ordered.limit(1).offset(bindparam("skip", type_=Integer))
        self.max_id = select(func.max(m.c.id)).where(m.c.session_id == sid)
        tail = m.c.session_id == sid, m.c.id > after
        self.tail = self._locked(select(m.c.id, m.c.message_data).where(*tail).order_by(m.c.id))
        self.tail_ids = self._locked(select(m.c.id).where(*tail).order_by(m.c.id))
        self.range = (*tail, m.c.id <= last)
        self.delete_range = delete(m).where(*self.range)
        self.delete_all = delete(m).where(m.c.session_id == sid)
        #: The source's owner, locked; no row for an expired source, which reads as empty
        #: and ``info`` reports as missing: forking it would bring its stale history back.
        self.source = self._locked(select(s.c.user_id).where(s.c.session_id == sid, alive(s)))
        self.taken = select(s.c.session_id).where(s.c.session_id == bindparam("new"))

    def _locked(self, stmt: Any) -> Any:
        return stmt.with_for_update() if self._locks else stmt

    def _write(self, operation: Callable[[AsyncConnection], Any]) -> Any:
        return self._store._write_core(operation)

    def _state(self, scope: Scope) -> Any:
        return self._store._scoped.statements(scope)

    @staticmethod
    def _params(session_id: str, scope: Scope) -> dict[str, Any]:
        return {"sid": session_id, "uid": scope.user_id, "ttl": scope.ttl}

    async def rewind(
        self, session_id: str, keep: int, return_items: bool, scope: Scope
    ) -> list[Any] | int:
        """Keep the first ``keep`` items; remove (and return, or count) the rest."""
        st, params = self._state(scope), self._params(session_id, scope)
        archive = self._store._archive

        async def rewind(conn: AsyncConnection) -> list[Any]:
            found = (await conn.execute(st.state_locked.core, params)).all()
            if not found or check_state(session_id, scope, found):
                return []  # no session, or an expired one: it reads as empty
            after = 0
            if keep:
                kept = (await conn.execute(self.nth_id, {"sid": session_id, "skip": keep - 1}))
                row = kept.first()
                if row is None:
                    return []  # fewer than ``keep`` items: nothing to remove
                after = int(row[0])
            stmt = self.tail if return_items else self.tail_ids
            rows = (await conn.execute(stmt, {"sid": session_id, "after": after})).all()
            if not rows:
                return []
            span = {"sid": session_id, "after": after, "last": int(rows[-1][0])}
            if archive is not None:
                await archive.move(conn, self.range, span, session_id, found[0][0], "rewind")
            await conn.execute(self.delete_range, span)
            return list(rows)

        rows = await self._write(rewind)
        if not return_items:
            return len(rows)
        return decode_rows((row[1] for row in rows), self._store._warn_corrupt(session_id))

    async def replace(self, session_id: str, encoded: list[str], scope: Scope) -> None:
        """Swap the whole history of ``session_id`` for ``encoded``, in one transaction."""
        st, params = self._state(scope), self._params(session_id, scope)
        store, archive = self._store, self._store._archive
        rows = [{"sid": session_id, "text": text} for text in encoded]

        async def replace(conn: AsyncConnection) -> None:
            if self._mysql and encoded:
                if store._max_packet is None:
                    packet = await conn.execute(store._statements.max_packet.core)
                    store._max_packet = int(packet.scalar_one())
                _dialect.check_packet_size(encoded, session_id, store._max_packet)
            found: Any = ()
            reads = archive is not None or not scope.plain
            if reads:  # the owner (to check, or to archive)
                found = (await conn.execute(st.state_locked.core, params)).all()
                if check_state(session_id, scope, found):
                    await conn.execute(st.reset.core, params)  # expired: it starts afresh
            await conn.execute(st.upsert.core, params)  # creates the row, or holds its lock
            if not reads:  # an expired row (locked by the upsert) starts afresh here
                await conn.execute(st.reset_expired.core, params)
            if archive is not None and found:
                span = {"sid": session_id, "after": 0, "last": None}
                await archive.move_all(conn, span, session_id, found[0][0], "replace")
            await conn.execute(self.delete_all, {"sid": session_id})
            if rows:
                await conn.execute(store._statements.insert.core, rows)

        await self._write(replace)

    async def fork(
        self,
        source_id: str,
        new_id: str,
        *,
        upto: int | None,
        user_id: str | None,
        title: str | None,
    ) -> None:
        """Copy ``source_id``'s history (or its first ``upto`` items) to a new ``new_id``."""
        check_session_id(source_id)
        check_session_id(new_id)
        if upto is not None:
            check_count(upto, "upto")
        if user_id is not None:
            check_user_id(user_id)
        if title is not None and not isinstance(title, str):
            raise ArgumentTypeError(f"title must be a str or None, not {type(title).__name__}")
        if new_id == source_id:
            raise InvalidArgumentError("fork needs a new_id other than the source's id")
        store = self._store
        s, m = store.sessions, store.messages

        async def fork(conn: AsyncConnection) -> None:
            source = (await conn.execute(self.source, {"sid": source_id})).first()
            if source is None:
                raise SessionNotFoundError(
                    f"session {source_id!r} does not exist or has expired; nothing was forked"
                )
            refuse_other_owner(source_id, user_id, source[0])
            if (await conn.execute(self.taken, {"new": new_id})).first() is not None:
                raise _exists(new_id)
            last: int | None
            if upto == 0:
                last = None
            else:
                last = (await conn.execute(self.max_id, {"sid": source_id})).scalar()
                if upto is not None and last is not None:
                    nth = await conn.execute(self.nth_id, {"sid": source_id, "skip": upto - 1})
                    last = nth.scalar() or last  # fewer than ``upto`` items: all of them
            expires: Any = null() if store.ttl is None else expires_after(literal(store.ttl))
            row = select(
                literal(new_id, s.c.session_id.type),
                literal(user_id, s.c.user_id.type) if user_id is not None else s.c.user_id,
                literal(title, s.c.title.type) if title is not None else s.c.title,
                s.c.metadata,
                expires,
                s.c.session_id,
                literal(last, s.c.forked_from_item_id.type),
            ).where(s.c.session_id == source_id)
            columns = ["session_id", "user_id", "title", "metadata", "expires_at"]
            columns += ["forked_from_session_id", "forked_from_item_id"]
            await conn.execute(insert(s).from_select(columns, row))
            if last is None:
                return
            items = (
                select(literal(new_id, m.c.session_id.type), m.c.message_data, m.c.created_at)
                .where(m.c.session_id == source_id, m.c.id <= last)
                .order_by(m.c.id)
            )
            copy = insert(m).from_select(["session_id", "message_data", "created_at"], items)
            await conn.execute(copy)

        try:
            await self._write(fork)
        except IntegrityError as exc:  # a concurrent fork (or write) took ``new_id`` first
            raise _exists(new_id) from exc


def _exists(new_id: str) -> SessionExistsError:
    return SessionExistsError(
        f"session {new_id!r} already exists; fork refuses to write into it. Pick another "
        "new_id, or clear that session first"
    )

