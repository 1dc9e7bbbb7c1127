"""SQL of the usage ledger: the owner-checked insert, the sums, and erasure of a user's rows.

Every aggregation runs in the database (``SUM`` ... ``GROUP BY``); day buckets are UTC days
on every dialect. Statements are built from the configured tables, never from text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Date,
    Insert,
    Integer,
    Select,
    Table,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agent_session_store._family import is_postgresql
from agent_session_store._usage_input import RunUsage
from agent_session_store.models import UTCDateTime, utcnow

GroupBy = Literal["day", "model", "session"]
#: The summed columns, in the order rows and tables show them.
SUMMED = (
    "requests",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
)
_UTC: Any = literal_column("'UTC'")  # a constant, so GROUP BY and SELECT compile the same SQL
_ONE = literal_column("1", Integer)
Write = Callable[[Callable[[AsyncConnection], Awaitable[int]]], Awaitable[int]]


def record_statement(
    usage: Table,
    sessions: Table,
    session_id: str,
    values: RunUsage,
    user_id: str | None,
    created_at: datetime | None,
) -> Insert:
    """``INSERT ... SELECT`` of one row, its owner copied from the session row.

    With ``user_id`` (an owner-bound handle) the ``SELECT`` yields no row when the session
    exists and is not that user's: the caller reads zero rows written and refuses.
    """
    u, s = usage, sessions
    owner: Any = select(s.c.user_id).where(s.c.session_id == session_id).scalar_subquery()
    count = BigInteger()
    row: dict[str, Any] = {
        "session_id": literal(session_id, u.c.session_id.type),
        "user_id": owner if user_id is None else literal(user_id, u.c.user_id.type),
        "model": literal(values.model, u.c.model.type),
        "requests": literal(values.requests, count),
        "input_tokens": literal(values.input_tokens, count),
        "output_tokens": literal(values.output_tokens, count),
        "total_tokens": literal(values.total_tokens, count),
        "cached_tokens": literal(values.cached_tokens, count),
        "reasoning_tokens": literal(values.reasoning_tokens, count),
        "created_at": utcnow() if created_at is None else literal(created_at, UTCDateTime()),
    }
    query = select(*(value.label(name) for name, value in row.items()))
    if user_id is not None:
        others = or_(s.c.user_id.is_(None), s.c.user_id != user_id)
        query = query.where(~exists(select(_ONE).where(s.c.session_id == session_id, others)))
    return insert(u).from_select(list(row), query)


def owner_statement(sessions: Table, session_id: str) -> Select[Any]:
    """The session's owner, read after a refused insert to say whose it is."""
    return select(sessions.c.user_id).where(sessions.c.session_id == session_id)


def day_of(dialect: Dialect, column: Any) -> Any:
    """The UTC calendar day of a ``UTCDateTime`` column, as SQL.

    PostgreSQL stores an instant (``timestamptz``): convert it to UTC wall time first, whatever
    the connection's time zone. MySQL/MariaDB and SQLite store UTC wall time already.
    """
    if is_postgresql(dialect):
        return cast(func.timezone(_UTC, column), Date)
    return func.date(column)


def totals_statement(
    usage: Table,
    dialect: Dialect,
    group_by: GroupBy | None,
    *,
    user_id: str | None,
    session_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Select[Any]:
    """One row per group (one row in all without ``group_by``): run count and the sums."""
    u = usage
    key: Any = None
    if group_by == "day":
        key = day_of(dialect, u.c.created_at)
    elif group_by == "model":
        key = u.c.model
    elif group_by == "session":
        key = u.c.session_id
    sums = [func.coalesce(func.sum(u.c[name]), 0).label(name) for name in SUMMED]
    stmt = select(
        *([] if key is None else [key.label("key")]), func.count().label("runs"), *sums
    )
    if user_id is not None:
        stmt = stmt.where(u.c.user_id == user_id)
    if session_id is not None:
        stmt = stmt.where(u.c.session_id == session_id)
    if since is not None:
        stmt = stmt.where(u.c.created_at >= since)
    if until is not None:
        stmt = stmt.where(u.c.created_at < until)
    return stmt if key is None else stmt.group_by(key)


class UserUsage:
    """The usage rows of one user: theirs by ``user_id``, and any on a session they own."""

    def __init__(
        self, engine: AsyncEngine, usage: Table, sessions: Table, user_id: str, write: Write
    ) -> None:
        self._engine, self._write = engine, write
        theirs = select(sessions.c.session_id).where(sessions.c.user_id == user_id)
        self._usage = usage
        self._condition = or_(usage.c.user_id == user_id, usage.c.session_id.in_(theirs))

    async def remove(self, batch_size: int, dry_run: bool) -> int:
        """Delete the rows, ``batch_size`` per transaction (count them when ``dry_run``)."""
        u = self._usage
        if dry_run:
            async with self._engine.connect() as conn:
                found = await conn.execute(
                    select(func.count()).select_from(u).where(self._condition)
                )
                return int(found.scalar_one())
        pick = select(u.c.id).where(self._condition).order_by(u.c.id).limit(batch_size)

        async def batch(conn: AsyncConnection) -> int:
            ids = list((await conn.execute(pick)).scalars())
            if ids:
                await conn.execute(delete(u).where(u.c.id.in_(ids)))
            return len(ids)

        total = 0
        while True:
            gone = await self._write(batch)
            total += gone
            if gone < batch_size:
                return total
