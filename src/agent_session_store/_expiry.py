"""Expiry inside the statements that read and write: every handle sees it, none pays a trip.

An expired session reads as empty through every handle, plain or scoped: each read carries
``NOT EXISTS (the session row, expired)`` in its own ``WHERE`` (one statement, one snapshot).
The first write to an expired session starts it afresh: its old items, title and metadata go
in that write's transaction. The session-row upsert every write sends anyway finds out, so a
write to a live session sends no more statements than before:

* PostgreSQL: the append is one statement whose upsert resets an expired row and whose
  ``cleared`` CTE deletes the old items (all parts see the rows as they were before it ran,
  and the upsert's row lock orders concurrent writers: only the first one restarts).
* SQLite: the upsert updates only a live row (``DO UPDATE ... WHERE alive``) and returns it;
  no row back means expired (or, scoped, another owner's): then the slow path, under the
  write lock SQLite holds for the whole transaction.
* MySQL/MariaDB: the upsert's ``ON DUPLICATE KEY UPDATE`` reports the row's state through
  ``LAST_INSERT_ID(state)`` (0 live, 1 expired, 2 another owner), which the server returns
  with the statement's result, and changes the row only when it is live. The row stays
  locked by the upsert for the rest of the transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Integer,
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
from agent_session_store._family import is_sqlite
from agent_session_store._record_sql import expires_after
from agent_session_store.models import utcnow

if TYPE_CHECKING:
    from agent_session_store._executor import Runner
    from agent_session_store._statements import Statement

_ONE = literal_column("1", Integer)


class RowState(enum.IntEnum):
    """What the MySQL/MariaDB upsert found (its ``LAST_INSERT_ID``)."""

    LIVE = 0  # or a new row: the upsert wrote it
    EXPIRED = 1  # untouched: the caller restarts the session
    OTHER_OWNER = 2  # untouched: the caller refuses


def alive(s: Table) -> Any:
    """The session row has no expiry, or it is still ahead."""
    return or_(s.c.expires_at.is_(None), s.c.expires_at > utcnow())


def not_expired(s: Table, sid: Any) -> Any:
    """No row of ``sid`` is past its expiry (true, too, for items without a session row)."""
    return ~exists(select(_ONE).where(s.c.session_id == sid, s.c.expires_at <= utcnow()))


def new_expiry(ttl: bool) -> Any:
    """``expires_at`` after a write: now + the ``ttl`` parameter, or none."""
    return expires_after(bindparam("ttl", type_=Integer)) if ttl else null()


def reset(s: Table, sid: Any, *, ttl: bool) -> Any:
    """Start an expired session afresh: no title, metadata or expiry (or now + ttl)."""
    return (
        update(s)
        .where(s.c.session_id == sid)
        .values(
            title=null(),
            metadata=null(),
            expires_at=new_expiry(ttl),
            created_at=utcnow(),
            updated_at=utcnow(),
        )
    )


def slide(s: Table, sid: Any) -> Any:
    """Move the session's expiry to now + the ``ttl`` parameter (a pop is a write too)."""
    return update(s).where(s.c.session_id == sid).values(expires_at=new_expiry(True))


def touch(dialect: Dialect, s: Table, sid: Any, uid: Any, *, owned: bool, ttl: bool) -> Any:
    """The session-row upsert of a write, which finds out whether the row is live (or ours).

    SQLite: returns the session id when it wrote the row, nothing otherwise. MySQL/MariaDB:
    its ``LAST_INSERT_ID`` is a :class:`RowState`. New rows are owned by ``uid`` if ``owned``.
    """
    row: dict[str, Any] = {"session_id": sid}
    if owned:
        row["user_id"] = uid
    if ttl:
        row["expires_at"] = new_expiry(True)
    if _dialect.is_mysql(dialect):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        state: Any = case((s.c.expires_at <= utcnow(), int(RowState.EXPIRED)), else_=0)
        if owned:
            theirs = ~s.c.user_id.is_not_distinct_from(uid)
            state = case((theirs, int(RowState.OTHER_OWNER)), else_=state)
        # Assignments run left to right, each seeing the ones before: the state is taken
        # first, from the row as it was, and expires_at is assigned last.
        live = func.LAST_INSERT_ID(state) == 0
        assignments: list[tuple[Any, Any]] = [
            ("updated_at", case((live, utcnow()), else_=s.c.updated_at))
        ]
        if ttl:
            still = state == 0  # expires_at is not assigned yet: the same state
            slid = case((still, new_expiry(True)), else_=s.c.expires_at)
            assignments.append(("expires_at", slid))
        return mysql_insert(s).values(row).on_duplicate_key_update(assignments)
    set_: dict[str, Any] = {"updated_at": utcnow()}
    if ttl:
        set_["expires_at"] = new_expiry(True)
    where = alive(s) if not owned else alive(s) & (s.c.user_id == uid)
    if is_sqlite(dialect):
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        upsert: Any = sqlite_insert(s)
    else:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        upsert = pg_insert(s)
    upsert = upsert.values(row).on_conflict_do_update(
        index_elements=[s.c.session_id], set_=set_, where=where
    )
    return upsert.returning(s.c.session_id)


def append_postgresql(
    s: Table, m: Table, sid: Any, uid: Any, *, owned: bool, ttl: bool, keys: Table | None = None
) -> Any:
    """One statement: upsert the session row (restarting it if expired), append the items.

    With ``owned`` the upsert's ``WHERE`` refuses another owner's row: then no row comes
    back, no item is inserted, and the count the statement returns is 0. An expired row is
    reset by the upsert and its old items deleted by the ``cleared`` CTE; both see the rows
    as they were when the statement began, so the new items are never among those deleted.
    Concurrent writers queue on the upsert's row lock, and the upsert judges the row as the
    writer before it left it: only the first writer after expiry restarts the session, and
    the others' ``cleared`` finds only the rows the first already deleted.
    With ``keys``, the batch's idempotency key ``key`` is inserted too, by one more CTE
    (``_dialect.keyed_cte``): a key already there fails the whole statement.
    """
    from sqlalchemy.dialects.postgresql import ARRAY
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    was_expired = s.c.expires_at <= utcnow()
    row: dict[str, Any] = {"session_id": sid}
    if owned:
        row["user_id"] = uid
    if ttl:
        row["expires_at"] = new_expiry(True)
    kept_expiry = case((was_expired, null()), else_=s.c.expires_at)
    set_ = {
        "title": case((was_expired, null()), else_=s.c.title),
        "metadata": case((was_expired, null()), else_=s.c.metadata),
        "created_at": case((was_expired, utcnow()), else_=s.c.created_at),
        "updated_at": utcnow(),
        "expires_at": new_expiry(True) if ttl else kept_expiry,
    }
    theirs = (s.c.user_id == uid) if owned else None
    touched = (
        pg_insert(s)
        .values(row)
        .on_conflict_do_update(index_elements=[s.c.session_id], set_=set_, where=theirs)
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
    stale = [s.c.session_id == sid, was_expired] + ([s.c.user_id == uid] if owned else [])
    cleared = (
        delete(m).where(m.c.session_id == sid, exists(select(_ONE).where(*stale))).cte("cleared")
    )
    stmt = select(func.count()).select_from(touched).add_cte(added).add_cte(cleared)
    return stmt if keys is None else stmt.add_cte(source)


def pop_postgresql(pop: Any, s: Table, sid: Any) -> Any:
    """``pop`` (``DELETE ... RETURNING message_data``), sliding the expiry if it took a row."""
    popped = pop.cte("popped")
    slid = (
        update(s)
        .where(s.c.session_id == sid, exists(select(_ONE).select_from(popped)))
        .values(expires_at=new_expiry(True))
        .cte("slid")
    )
    return select(popped.c.message_data).add_cte(slid)


async def touched(
    run: Runner, touch: Statement, params: Mapping[str, Any], *, mysql: bool
) -> RowState | None:
    """Send the write's upsert; what it found, or None where it wrote nothing (SQLite).

    SQLite says only that it did not write the row (expired, or another owner's): the
    caller reads the row to tell which, under the write lock SQLite already holds.
    """
    if mysql:
        return RowState(await run.insert_id(touch, params))
    return RowState.LIVE if await run.rows(touch, params) else None
