"""The four operations for handles bound to an owner or to expiry: the checks are in the SQL.

A handle with ``user_id`` reads only rows whose session that user owns (an ``EXISTS`` on the
session row in the same ``SELECT``), and writes under the session row's lock, taken by the
statement or transaction that writes: a session id that leaks never lets another user's
handle read, add to, pop from or clear that conversation, and a refused call changes nothing.
A handle with expiry reads an expired session as empty, and its first write starts the
conversation afresh (the old items go in the same transaction); each write moves
``expires_at`` to now + ttl. Handles with neither keep the store's plain statements.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    Table,
    Text,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Dialect

from agent_session_store import _dialect
from agent_session_store._family import is_postgresql, is_sqlite
from agent_session_store._record_sql import expires_after
from agent_session_store.models import utcnow
from agent_session_store.records import refuse_other_owner

_ONE = literal_column("1", Integer)


@dataclass(frozen=True)
class Scope:
    """What a handle is bound to: an owner, a sliding time to live, whether expiry counts."""

    user_id: str | None = None
    #: Seconds each write moves ``expires_at`` ahead of now; None leaves it as it is.
    ttl: int | None = None
    #: Reads and writes treat a session past ``expires_at`` as gone.
    expiry: bool = False
    #: Removals (pop, clear, rewind, replace) move items to the archive (``_archive``).
    archive: bool = False

    @property
    def plain(self) -> bool:
        """True when the store's plain statements serve this handle's reads and appends."""
        return self.user_id is None and self.ttl is None and not self.expiry

    @property
    def removes_plainly(self) -> bool:
        """True when the store's plain statements serve this handle's pops and clears."""
        return self.user_id is None and self.ttl is None and not self.expiry and not self.archive


PLAIN = Scope()


class ScopedStatements:
    """The statements of one :class:`Scope` shape (owner or not, expiry or not, ttl or not)."""

    def __init__(
        self,
        sessions: Table,
        messages: Table,
        dialect: Dialect,
        prepare: Callable[..., Any],
        *,
        owned: bool,
        expiry: bool,
        ttl: bool,
        keys: Table | None = None,
    ) -> None:
        s, m = sessions, messages
        sid = bindparam("sid", type_=s.c.session_id.type)
        uid = bindparam("uid", type_=String())
        lim = bindparam("lim", type_=Integer)
        self.owned, self.expiry = owned, expiry
        alive = or_(s.c.expires_at.is_(None), s.c.expires_at > utcnow())
        conditions: list[Any] = [s.c.session_id == sid]
        if owned:
            conditions.append(s.c.user_id == uid)
        if expiry:
            conditions.append(alive)
        live = exists(select(_ONE).where(*conditions))
        text = select(m.c.message_data).where(m.c.session_id == sid, live)
        self.tail = prepare(text.order_by(m.c.id.desc()).limit(lim))
        self.all = prepare(text.order_by(m.c.id))
        expired = case((s.c.expires_at <= utcnow(), 1), else_=0)
        state = select(s.c.user_id, expired).where(s.c.session_id == sid)
        self.state = prepare(state)
        locks = not is_sqlite(dialect)  # SQLite: the write transaction holds the whole file
        self.state_locked = prepare(state.with_for_update() if locks else state)
        # Clearing is the owner's whether or not the session has expired.
        mine = exists(select(_ONE).where(s.c.session_id == sid, s.c.user_id == uid))
        self.delete_messages = prepare(
            delete(m).where(m.c.session_id == sid, mine if owned else true()), modifies=True
        )
        owner_of = [s.c.user_id == uid] if owned else []
        self.delete_session = prepare(
            delete(s).where(s.c.session_id == sid, *owner_of), modifies=True
        )
        self.reset = prepare(
            update(s)
            .where(s.c.session_id == sid)
            .values(title=null(), metadata=null(), expires_at=null(), created_at=utcnow()),
            modifies=True,
        )
        new_expiry: Any = expires_after(bindparam("ttl", type_=Integer)) if ttl else None
        row: dict[str, Any] = {"session_id": sid, "user_id": uid}
        if ttl:
            row["expires_at"] = new_expiry
        on_conflict: dict[str, Any] = {"updated_at": utcnow()}
        if ttl:
            on_conflict["expires_at"] = new_expiry
        self.touch = prepare(_upsert(dialect, s, row, on_conflict), modifies=True)
        #: SQLite, owner without expiry: the upsert refuses another owner's row itself (its
        #: WHERE), and RETURNING tells: one statement fewer than reading the row first.
        self.touch_owned = None
        if is_sqlite(dialect) and owned and not expiry:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            upsert = (
                sqlite_insert(s)
                .values(row)
                .on_conflict_do_update(
                    index_elements=[s.c.session_id], set_=on_conflict, where=s.c.user_id == uid
                )
            )
            self.touch_owned = prepare(upsert.returning(s.c.session_id), modifies=True)
        self.append = self.append_keyed = None
        if is_postgresql(dialect):
            self.append = prepare(
                _append_postgresql(s, m, sid, uid, on_conflict, row, owned, expiry), modifies=True
            )
            if keys is not None:
                self.append_keyed = prepare(
                    _append_postgresql(s, m, sid, uid, on_conflict, row, owned, expiry, keys),
                    modifies=True,
                )
        self.pop = prepare(
            delete(m)
            .where(
                m.c.id
                == select(m.c.id)
                .where(m.c.session_id == sid, live)
                .order_by(m.c.id.desc())
                .limit(_ONE)
                .scalar_subquery()
            )
            .returning(m.c.message_data),
            modifies=True,
        )


def _upsert(dialect: Dialect, s: Table, row: dict[str, Any], on_conflict: dict[str, Any]) -> Any:
    """``INSERT`` the session row, or set ``on_conflict`` on it; locks the row until commit."""
    if _dialect.is_mysql(dialect):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        return mysql_insert(s).values(row).on_duplicate_key_update(on_conflict)
    if is_postgresql(dialect):
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return (
            pg_insert(s)
            .values(row)
            .on_conflict_do_update(index_elements=[s.c.session_id], set_=on_conflict)
        )
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return (
        sqlite_insert(s)
        .values(row)
        .on_conflict_do_update(index_elements=[s.c.session_id], set_=on_conflict)
    )


def _append_postgresql(
    s: Table,
    m: Table,
    sid: Any,
    uid: Any,
    on_conflict: dict[str, Any],
    row: dict[str, Any],
    owned: bool,
    expiry: bool,
    keys: Table | None = None,
) -> Any:
    """One statement: upsert the session row under its owner's condition, append the items.

    The upsert's ``WHERE`` refuses another owner's row: then no row comes back, no item is
    inserted, and the count the statement returns is 0. With expiry, an expired session's
    old items are deleted and its fields cleared in the same statement (every part of it
    sees the rows as they were before it ran, so the new items are not among those deleted).
    With ``keys``, the batch's idempotency key is inserted too (``_dialect.keyed_cte``).
    """
    from sqlalchemy.dialects.postgresql import ARRAY
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    was_expired = s.c.expires_at <= utcnow()
    set_ = dict(on_conflict)
    if expiry:
        set_ = {
            "title": case((was_expired, null()), else_=s.c.title),
            "metadata": case((was_expired, null()), else_=s.c.metadata),
            "created_at": case((was_expired, utcnow()), else_=s.c.created_at),
            **set_,
        }
    where = s.c.user_id == uid if owned else None
    touched = (
        pg_insert(s)
        .values(row)
        .on_conflict_do_update(index_elements=[s.c.session_id], set_=set_, where=where)
        .returning(s.c.session_id)
        .cte("touched")
    )
    texts = (
        func.unnest(bindparam("texts", type_=ARRAY(Text)))
        .table_valued("message_data", with_ordinality="n")
        .render_derived()
    )
    source: Any = touched if keys is None else _dialect.keyed_cte(keys, touched)
    rows = (
        select(source.c.session_id, texts.c.message_data)
        .select_from(source)
        .join(texts, true())
        .order_by(texts.c.n)
    )
    added = insert(m).from_select(["session_id", "message_data"], rows).cte("added")
    stmt = select(func.count()).select_from(touched).add_cte(added)
    if keys is not None:
        stmt = stmt.add_cte(source)
    if expiry:
        stale = [s.c.session_id == sid, was_expired] + ([s.c.user_id == uid] if owned else [])
        cleared = (
            delete(m)
            .where(m.c.session_id == sid, exists(select(_ONE).where(*stale)))
            .cte("cleared")
        )
        stmt = stmt.add_cte(cleared)
    return stmt


def check_state(session_id: str, scope: Scope, found: Any) -> bool:
    """Raise for another owner's session; return True when the session is expired."""
    if not found:
        return False
    owner, expired = found[0]
    if scope.user_id is not None:
        refuse_other_owner(session_id, scope.user_id, owner)
    return bool(scope.expiry and expired)
