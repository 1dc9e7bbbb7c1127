"""The opt-in archive: removed items move to ``<messages>_archive``, and come back by ``restore``.

A store opened with ``archive=True`` (or a retention ``timedelta``) sends ``pop_item`` and
``clear_session`` here instead of to its plain statements (chosen once, when the handle's
scope is made), and ``rewind``/``replace_items`` call :meth:`Archive.move` before they
delete: the ``INSERT … SELECT`` into the archive and the ``DELETE`` are one transaction, under
the session row's lock, so an item is in the live table or in the archive, never in neither.

Each archiving operation is one *batch*. ``restore`` undoes the newest batch that was not
itself a restore: the session becomes exactly what it was just before that operation (its
items under their original ids, so in their original order), and whatever was written since
moves to the archive (reason ``restore``), so nothing is lost by restoring either.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import BigInteger, Integer, bindparam, delete, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from agent_session_store._json import check_session_id, decode_rows
from agent_session_store._scoped import Scope, _upsert, check_state
from agent_session_store.errors import ArgumentTypeError, InvalidArgumentError
from agent_session_store.models import utcnow
from agent_session_store.records import refuse_other_owner

_COLUMNS = ["session_id", "user_id", "item_id", "message_data", "created_at", "batch", "reason"]


def check_archive(value: object) -> timedelta | None:
    """The retention of ``archive=``: None for off, ``timedelta.max`` for forever."""
    if value is False or value is None:
        return None
    if value is True:
        return timedelta.max
    if isinstance(value, timedelta) and value > timedelta(0):
        return value
    if isinstance(value, timedelta):
        raise InvalidArgumentError(f"archive retention must be positive, got {value}")
    raise ArgumentTypeError(
        f"archive must be True, False or a timedelta (the retention), not {type(value).__name__}"
    )


class Archive:
    """The archive table of one store: moving rows in, restoring, purging."""

    def __init__(self, store: Any, retention: timedelta | None) -> None:
        self._store = store
        self.retention = retention
        self.table = a = store.archive_table
        self._locks = store.engine.dialect.name != "sqlite"
        sid = bindparam("sid", type_=a.c.session_id.type)
        self.latest = (
            select(a.c.batch, a.c.user_id)
            .where(a.c.session_id == sid, a.c.reason != "restore")
            .order_by(a.c.id.desc())
            .limit(1)
        )
        batch = bindparam("batch", type_=BigInteger)
        self.batch = a.c.session_id == sid, a.c.batch == batch
        self.first_id = select(func.min(a.c.item_id)).where(*self.batch)

    def _write(self, operation: Callable[[AsyncConnection], Any]) -> Any:
        return self._store._transport.write_core(operation)

    async def move(
        self,
        conn: AsyncConnection,
        where: Sequence[Any],
        params: dict[str, Any],
        session_id: str,
        owner: str | None,
        reason: str,
    ) -> None:
        """Copy the messages matching ``where`` into the archive as one batch."""
        m, a = self._store.messages, self.table
        rows = select(
            m.c.session_id,
            literal(owner, a.c.user_id.type),
            m.c.id,
            m.c.message_data,
            m.c.created_at,
            literal(secrets.randbits(62), a.c.batch.type),
            literal(reason, a.c.reason.type),
        ).where(*where)
        await conn.execute(insert(a).from_select(_COLUMNS, rows), params)

    async def move_all(
        self,
        conn: AsyncConnection,
        params: dict[str, Any],
        session_id: str,
        owner: str | None,
        reason: str,
    ) -> None:
        """Copy every message of the session into the archive as one batch."""
        m = self._store.messages
        where = [m.c.session_id == bindparam("sid", type_=m.c.session_id.type)]
        await self.move(conn, where, params, session_id, owner, reason)

    # -- the two Session operations, archiving ------------------------------------------

    async def pop_item(self, session_id: str, scope: Scope) -> Any | None:
        """``pop_item``, with the popped item moved to the archive."""
        store = self._store
        st, plain = store._scoped.statements(scope), store._statements
        params = {"sid": session_id, "uid": scope.user_id, "ttl": scope.ttl}
        m = store.messages

        async def pop(conn: AsyncConnection) -> tuple[str] | None:
            found = (await conn.execute(st.state_locked.core, params)).all()
            if not found or check_state(session_id, scope, found):
                return None
            newest = (await conn.execute(plain.select_newest_locked.core, params)).first()
            if newest is None:
                return None
            row_id = {"row_id": int(newest[0])}
            where = [m.c.id == bindparam("row_id", type_=Integer)]
            await self.move(conn, where, row_id, session_id, found[0][0], "pop")
            await conn.execute(plain.delete_by_id.core, row_id)
            return (str(newest[1]),)

        while True:
            popped = await self._write(pop)
            if popped is None:
                return None
            decoded = decode_rows(popped, store._warn_corrupt(session_id))
            if decoded:
                return decoded[0]

    async def clear_session(self, session_id: str, scope: Scope) -> None:
        """``clear_session``, with every item moved to the archive."""
        st = self._store._scoped.statements(scope)
        params = {"sid": session_id, "uid": scope.user_id, "ttl": scope.ttl}

        async def clear(conn: AsyncConnection) -> None:
            found = (await conn.execute(st.state_locked.core, params)).all()
            check_state(session_id, scope, found)
            if not found:
                return
            await self.move_all(conn, params, session_id, found[0][0], "clear")
            await conn.execute(st.delete_messages.core, params)
            await conn.execute(st.delete_session.core, params)

        await self._write(clear)

    # -- restore and purge --------------------------------------------------------------

    async def restore(self, session_id: str, user_id: str | None = None) -> int:
        """Undo the newest archiving operation on ``session_id``; return the items restored."""
        check_session_id(session_id)
        store = self._store
        s, m, a = store.sessions, store.messages, self.table
        sid = {"sid": session_id}
        owner_of = select(s.c.user_id).where(s.c.session_id == session_id)

        async def restore(conn: AsyncConnection) -> int:
            first = (await conn.execute(self.latest, sid)).first()
            if first is None:
                return 0
            refuse_other_owner(session_id, user_id, first[1])
            row = {"session_id": session_id, "user_id": first[1]}
            await conn.execute(_upsert(store.engine.dialect, s, row, {"updated_at": utcnow()}))
            refuse_other_owner(session_id, user_id, (await conn.execute(owner_of)).scalar())
            latest = (await conn.execute(self.latest, sid)).first()  # now under the row lock
            if latest is None:
                return 0
            batch = {"sid": session_id, "batch": int(latest[0])}
            first_id = int((await conn.execute(self.first_id, batch)).scalar_one())
            since = [m.c.session_id == session_id, m.c.id >= first_id]
            await self.move(conn, since, {}, session_id, latest[1], "restore")
            await conn.execute(delete(m).where(*since))
            back = select(a.c.item_id, a.c.session_id, a.c.message_data, a.c.created_at)
            back = back.where(*self.batch).order_by(a.c.item_id)
            columns = ["id", "session_id", "message_data", "created_at"]
            await conn.execute(insert(m).from_select(columns, back), batch)
            gone = await conn.execute(delete(a).where(*self.batch), batch)
            return int(gone.rowcount)

        result: int = await self._write(restore)
        return result

    async def purge(self, older_than: datetime | timedelta | None = None) -> int:
        """Delete archived items archived before ``older_than`` (default: the retention)."""
        if older_than is None:
            if self.retention is None or self.retention == timedelta.max:
                raise InvalidArgumentError(
                    "purge_archive needs older_than= (a timedelta or an aware datetime): "
                    "this store keeps archived items without a retention"
                )
            older_than = self.retention
        if isinstance(older_than, timedelta):
            cutoff = datetime.now(timezone.utc) - older_than
        elif isinstance(older_than, datetime) and older_than.tzinfo is not None:
            cutoff = older_than
        else:
            raise ArgumentTypeError(
                f"older_than must be a timedelta or an aware datetime, got {older_than!r}"
            )
        a = self.table

        async def purge(conn: AsyncConnection) -> int:
            gone = await conn.execute(delete(a).where(a.c.archived_at < cutoff))
            return int(gone.rowcount)

        result: int = await self._write(purge)
        return result

    async def purge_user(self, user_id: str) -> int:
        """Delete every archived item of ``user_id`` (``erase_user``)."""
        a = self.table

        async def purge(conn: AsyncConnection) -> int:
            gone = await conn.execute(delete(a).where(a.c.user_id == user_id))
            return int(gone.rowcount)

        result: int = await self._write(purge)
        return result
