"""The four operations for handles bound to an owner or a ttl: the checks are in the SQL.

A handle with ``user_id`` reads only rows whose session that user owns (an ``EXISTS`` on the
session row in the same ``SELECT``), and writes under the session row's lock, taken by the
statement or transaction that writes: a session id that leaks never lets another user's
handle read, add to, pop from or clear that conversation, and a refused call changes nothing.
Every handle reads an expired session as empty, and its first write starts the conversation
afresh (the old items go in the same transaction; ``_expiry``); a handle with a ttl moves
``expires_at`` to now + ttl at each write. Handles with neither owner nor ttl keep the
store's plain statements, which see expiry the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    Table,
    bindparam,
    case,
    delete,
    exists,
    literal_column,
    select,
    true,
)
from sqlalchemy.engine import Dialect

from agent_session_store import _dialect, _expiry
from agent_session_store._family import is_postgresql, is_sqlite
from agent_session_store.models import utcnow
from agent_session_store.records import refuse_other_owner

_ONE = literal_column("1", Integer)


@dataclass(frozen=True)
class Scope:
    """What a handle is bound to: an owner, a sliding time to live."""

    user_id: str | None = None
    #: Seconds each write moves ``expires_at`` ahead of now; None leaves it as it is.
    ttl: int | None = None
    #: Removals (pop, clear, rewind, replace) move items to the archive (``_archive``).
    archive: bool = False

    @property
    def plain(self) -> bool:
        """True when the store's plain statements serve this handle's reads and appends.

        They see expiry too (``_expiry``).
        """
        return self.user_id is None and self.ttl is None

    @property
    def removes_plainly(self) -> bool:
        """True when the store's plain statements serve this handle's pops and clears."""
        return self.plain and not self.archive


PLAIN = Scope()


class ScopedStatements:
    """The statements of one :class:`Scope` shape (owner or not, ttl or not).

    Expiry is in every one of them (``_expiry``): an expired session reads as empty, and
    the first write to it starts it afresh.
    """

    def __init__(
        self,
        sessions: Table,
        messages: Table,
        dialect: Dialect,
        prepare: Callable[..., Any],
        *,
        owned: bool,
        ttl: bool,
        keys: Table | None = None,
    ) -> None:
        s, m = sessions, messages
        sid = bindparam("sid", type_=s.c.session_id.type)
        uid = bindparam("uid", type_=String())
        lim = bindparam("lim", type_=Integer)
        self.owned, self.ttl = owned, ttl
        conditions: list[Any] = [s.c.session_id == sid, _expiry.alive(s)]
        if owned:
            conditions.append(s.c.user_id == uid)
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
        self.reset = prepare(_expiry.reset(s, sid, ttl=ttl), modifies=True)
        #: ``reset`` only if the row is expired: for writes that did not read the row first.
        self.reset_expired = prepare(
            _expiry.reset(s, sid, ttl=ttl).where(s.c.expires_at <= utcnow()), modifies=True
        )
        #: The plain session-row upsert (sliding a ttl): creates the row or holds its lock,
        #: for writes that checked the row themselves (``_history``).
        row: dict[str, Any] = {"session_id": sid, "user_id": uid}
        on_conflict: dict[str, Any] = {"updated_at": utcnow()}
        if ttl:
            row["expires_at"] = on_conflict["expires_at"] = _expiry.new_expiry(True)
        self.upsert = prepare(_upsert(dialect, s, row, on_conflict), modifies=True)
        #: SQLite, MySQL/MariaDB: the session-row upsert that tells live, expired or theirs.
        self.touch = None
        #: PostgreSQL: upsert and items in one statement.
        self.append = None
        #: PostgreSQL: ``append`` that also records the batch's idempotency key ``key``.
        self.append_keyed = None
        if is_postgresql(dialect):
            append = _expiry.append_postgresql(s, m, sid, uid, owned=owned, ttl=ttl)
            self.append = prepare(append, modifies=True)
            if keys is not None:
                keyed = _expiry.append_postgresql(s, m, sid, uid, owned=owned, ttl=ttl, keys=keys)
                self.append_keyed = prepare(keyed, modifies=True)
        else:
            touch = _expiry.touch(dialect, s, sid, uid, owned=owned, ttl=ttl)
            self.touch = prepare(touch, modifies=True)
        pop = (
            delete(m)
            .where(
                m.c.id
                == select(m.c.id)
                .where(m.c.session_id == sid, live)
                .order_by(m.c.id.desc())
                .limit(_ONE)
                .scalar_subquery()
            )
            .returning(m.c.message_data)
        )
        #: PostgreSQL with a ttl: the pop slides the expiry in the same statement.
        self.pop_slides = ttl and is_postgresql(dialect)
        self.pop = prepare(
            _expiry.pop_postgresql(pop, s, sid) if self.pop_slides else pop, modifies=True
        )
        self.slide = prepare(_expiry.slide(s, sid), modifies=True)


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


def check_state(session_id: str, scope: Scope, found: Any) -> bool:
    """Raise for another owner's session; return True when the session is expired."""
    if not found:
        return False
    owner, expired = found[0]
    if scope.user_id is not None:
        refuse_other_owner(session_id, scope.user_id, owner)
    return bool(expired)
