"""The usage ledger: what each agent run cost, per session, user, model and day.

``session.record_usage(result)`` writes one row per run (requests, input/output/total tokens,
cached and reasoning tokens when reported, the model, the time), its owner copied from the
session; ``store.usage(...)`` sums the rows in SQL, grouped by UTC day, model or session.
Rows outlive their session (billing survives ``clear_session``, expiry and ``prune``);
``erase_user`` deletes them. Through SQLAlchemy Core, off the hot path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agent_session_store import _usage_sql
from agent_session_store._json import check_session_id, check_user_id
from agent_session_store._usage_input import RunUsage, run_usage
from agent_session_store._usage_sql import GroupBy
from agent_session_store.errors import ArgumentTypeError, InvalidArgumentError
from agent_session_store.records import refuse_other_owner, write_retrying

__all__ = ["GROUPS", "GroupBy", "RunUsage", "UsageLedger", "UsageTotals"]

#: What ``group_by`` takes, besides None.
GROUPS: tuple[GroupBy, ...] = ("day", "model", "session")


@dataclass(frozen=True)
class UsageTotals:
    """The sums over the ledger rows of one group, or of all rows when ungrouped.

    Only the field of the grouping is set: ``day`` (a UTC date) for ``group_by="day"``,
    ``model`` (None for runs recorded without one) for ``"model"``, ``session_id`` for
    ``"session"``. ``runs`` counts rows; token details not reported count as 0.
    """

    day: date | None = None
    model: str | None = None
    session_id: str | None = None
    runs: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The totals as JSON-ready values (the day as ``YYYY-MM-DD``)."""
        values = asdict(self)
        values["day"] = None if self.day is None else self.day.isoformat()
        return values


class UsageLedger:
    """The usage rows of one store (``store.record_usage``, ``store.usage``).

    Args:
        engine: The store's engine.
        usage: The usage table.
        sessions: The sessions table, whose owner each row copies.
    """

    def __init__(self, engine: AsyncEngine, usage: Table, sessions: Table) -> None:
        self._engine, self._u, self._s = engine, usage, sessions

    async def record(
        self,
        session_id: str,
        result_or_usage: Any,
        *,
        model: str | None = None,
        user_id: str | None = None,
        created_at: datetime | None = None,
    ) -> RunUsage:
        """Write one row for a run of ``session_id``; return what was written.

        The row's owner is the session's (None while the session has no row), or, for a
        handle bound to ``user_id``, that user, who must own the session if it exists.

        Raises:
            SessionOwnershipError: ``user_id`` is given and the session is another's (or no
                one's); nothing was written.
            ArgumentTypeError, InvalidArgumentError: bad usage values, model, id or time;
                nothing was written.
        """
        check_session_id(session_id)
        if user_id is not None:
            check_user_id(user_id)
        values = run_usage(result_or_usage, model)
        if created_at is not None:
            _aware(created_at, "created_at")
        insert = _usage_sql.record_statement(
            self._u, self._s, session_id, values, user_id, created_at
        )
        owner = _usage_sql.owner_statement(self._s, session_id)

        async def write(conn: AsyncConnection) -> None:
            if (await conn.execute(insert)).rowcount == 1:
                return
            refuse_other_owner(session_id, user_id, (await conn.execute(owner)).scalar())
            # The session changed hands between the two statements (deleted, then made
            # again by this user): it is this user's now.
            if (await conn.execute(insert)).rowcount != 1:
                refuse_other_owner(session_id, user_id, None)

        await write_retrying(self._engine, write)
        return values

    async def totals(
        self,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: GroupBy | None = None,
    ) -> list[UsageTotals]:
        """Sums of the rows matching every filter, one :class:`UsageTotals` per group.

        Args:
            user_id: Only runs of this owner.
            session_id: Only runs of this session.
            since: Only runs at or after this aware datetime.
            until: Only runs before this aware datetime.
            group_by: ``"day"`` (UTC days, oldest first), ``"model"`` (runs without a model
                first, then by name) or ``"session"`` (by id); None for one row of totals,
                zeros when nothing matches.

        Raises:
            InvalidArgumentError: a bad filter, ``since`` after ``until``, or an unknown
                ``group_by``.
        """
        if group_by is not None and group_by not in GROUPS:
            raise InvalidArgumentError(
                f"group_by must be one of {list(GROUPS)} or None, got {group_by!r}"
            )
        if user_id is not None:
            check_user_id(user_id)
        if session_id is not None:
            check_session_id(session_id)
        if since is not None:
            _aware(since, "since")
        if until is not None:
            _aware(until, "until")
        if since is not None and until is not None and since > until:
            raise InvalidArgumentError(f"since ({since}) is after until ({until})")
        stmt = _usage_sql.totals_statement(
            self._u,
            self._engine.dialect,
            group_by,
            user_id=user_id,
            session_id=session_id,
            since=since,
            until=until,
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        found = [_totals(row, group_by) for row in rows]
        # Sorted here, not by ORDER BY: the same order on every dialect and collation.
        found.sort(key=lambda totals: _sort_key(totals, group_by))
        return found


def _totals(row: Any, group_by: GroupBy | None) -> UsageTotals:
    sums = UsageTotals(
        runs=int(row.runs),
        requests=int(row.requests),
        input_tokens=int(row.input_tokens),
        output_tokens=int(row.output_tokens),
        total_tokens=int(row.total_tokens),
        cached_tokens=int(row.cached_tokens),
        reasoning_tokens=int(row.reasoning_tokens),
    )
    if group_by == "day":
        day = row.key if isinstance(row.key, date) else date.fromisoformat(str(row.key)[:10])
        return replace(sums, day=day)
    if group_by == "model":
        return replace(sums, model=row.key)
    if group_by == "session":
        return replace(sums, session_id=row.key)
    return sums


def _sort_key(totals: UsageTotals, group_by: GroupBy | None) -> tuple[Any, ...]:
    if group_by == "day":
        return (totals.day,)
    if group_by == "model":
        return (totals.model is not None, totals.model or "")
    return (totals.session_id or "",)


def _aware(value: object, what: str) -> None:
    if not isinstance(value, datetime):
        raise ArgumentTypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None:
        raise InvalidArgumentError(f"{what} must be a timezone-aware datetime, got {value!r}")
