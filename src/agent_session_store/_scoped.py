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

from agent_session_store import _expiry
from agent_session_store.models import utcnow
from agent_session_store.records import refuse_other_owner

_ONE = literal_column("1", Integer)


@dataclass(frozen=True)
class Scope:
    """What a handle is bound to: an owner, a sliding time to live."""

    user_id: str | None = None
    #: Seconds each write moves ``expires_at`` ahead of now; None leaves it as it is.
    ttl: int | None = None

    @property
    def plain(self) -> bool:
        """True when the store's plain statements serve this handle (they see expiry too)."""
        return self.user_id is None and self.ttl is None


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
        locks = dialect.name != "sqlite"  # SQLite: the write transaction holds the whole file
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
        #: SQLite, MySQL/MariaDB: the session-row upsert that tells live, expired or theirs.
        self.touch = None
        #: PostgreSQL: upsert and items in one statement.
        self.append = None
        if dialect.name == "postgresql":
            append = _expiry.append_postgresql(s, m, sid, uid, owned=owned, ttl=ttl)
            self.append = prepare(append, modifies=True)
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
        self.pop_slides = ttl and dialect.name == "postgresql"
        self.pop = prepare(
            _expiry.pop_postgresql(pop, s, sid) if self.pop_slides else pop, modifies=True
        )
        self.slide = prepare(_expiry.slide(s, sid), modifies=True)


def check_state(session_id: str, scope: Scope, found: Any) -> bool:
    """Raise for another owner's session; return True when the session is expired."""
    if not found:
        return False
    owner, expired = found[0]
    if scope.user_id is not None:
        refuse_other_owner(session_id, scope.user_id, owner)
    return bool(expired)
