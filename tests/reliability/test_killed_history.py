"""replace_items and rewind whose connection the server kills mid-transaction: all or nothing.

A listener on the store's engine (``after_cursor_execute``) holds the operation right after
its k-th statement, for every k up to its last one before COMMIT, and kills the store's
connection from another one: PostgreSQL ``pg_terminate_backend(pid)``, MariaDB
``KILL CONNECTION id``, a real kill on the real server. While the operation is still held,
a third connection reads the session: it must hold exactly the old history (and the old
archive), never part of the new one. Then the store's own rule runs: a connection lost before
COMMIT was sent is retried once on a fresh connection, so the call applies exactly once; one
lost with the COMMIT it was sending is ``CommitOutcomeUnknownError`` (the server rolled it
back: the old history stays); one lost again in the retry raises. Either way the next call
works on the same store.

Server dialects only: SQLite has no other connection that can kill one (an in-process file
database); its all-or-nothing under cancellation is in ``tests/test_history_concurrency.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.util import await_only

from agent_session_store import CommitOutcomeUnknownError, SessionStore

from ..conftest import ALL_KINDS
from ..test_history import items
from .faults import _SERVER_ID, ConnectionKiller

SERVERS = [p for p in ALL_KINDS if p.values[0] in ("postgresql", "mariadb")]
pytestmark = pytest.mark.parametrize("db_url", SERVERS, indirect=True)

OLD = items(6, "old")
NEW = items(2, "new")
#: Each operation on the victim, and the history it leaves when it applies.
OPERATIONS: dict[str, tuple[Callable[[Any], Awaitable[Any]], list[dict[str, Any]]]] = {
    "replace_items": (lambda chat: chat.replace_items(NEW), NEW),
    "rewind": (lambda chat: chat.rewind(2), OLD[:2]),
}
Snapshot = tuple[list[str], list[str]]


class Hold:
    """Kills the store's connection after the k-th statement of the next call, then reads."""

    def __init__(self, store: SessionStore, killer: ConnectionKiller, reader: AsyncEngine):
        self.store, self.killer, self.reader = store, killer, reader
        self.armed = False
        self.statements = 0
        self.kill_at: list[int] = []  # statement numbers (from the last kill) to kill after
        self.seen: list[Snapshot] = []  # what the reader found after each kill
        event.listen(store.engine.sync_engine, "after_cursor_execute", self._after)

    def _after(self, conn: Any, *args: Any) -> None:
        if not self.armed:
            return
        self.statements += 1
        if self.kill_at and self.statements == self.kill_at[0]:
            self.kill_at.pop(0)
            self.statements = 0
            # Inside SQLAlchemy's greenlet: wait on the event loop for the kill (until the
            # server dropped the connection, so rolled back) and for the read.
            assert await_only(self.killer.kill(conn.info[_SERVER_ID]))
            self.seen.append(await_only(snapshot(self.reader, self.store)))

    async def run(self, call: Awaitable[Any], kill_at: list[int]) -> Any:
        self.armed, self.statements, self.kill_at, self.seen = True, 0, list(kill_at), []
        try:
            return await call
        finally:
            self.armed = False

    def close(self) -> None:
        event.remove(self.store.engine.sync_engine, "after_cursor_execute", self._after)


async def snapshot(engine: AsyncEngine, store: SessionStore) -> Snapshot:
    """The victim's stored items and archived items, read on a connection of its own."""
    m, a = store.messages, store.archive_table
    async with engine.connect() as conn:
        stored = select(m.c.message_data).where(m.c.session_id == "victim").order_by(m.c.id)
        kept = select(a.c.message_data).where(a.c.session_id == "victim").order_by(a.c.id)
        return list((await conn.execute(stored)).scalars()), list(
            (await conn.execute(kept)).scalars()
        )


@pytest.fixture(params=[False, True], ids=["plain", "archive"])
async def held(db_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Hold]:
    async with SessionStore(db_url, archive=request.param) as store:
        killer = ConnectionKiller(store, db_url)  # before the first connection is made
        reader = create_async_engine(db_url, poolclass=NullPool)
        await store.create_tables()
        hold = Hold(store, killer, reader)
        try:
            yield hold
        finally:
            hold.close()
            await reader.dispose()
            await killer.close()


async def statements_of(hold: Hold, op: str) -> int:
    """How many statements ``op`` sends on the victim as it stands (its second run: the first
    may send one-off ones, such as MariaDB's max_allowed_packet)."""
    run, _ = OPERATIONS[op]
    chat = hold.store.session("victim")
    for _ in range(2):
        await chat.replace_items(OLD)
        await hold.run(run(chat), kill_at=[])
    return hold.statements


@pytest.mark.parametrize("op", list(OPERATIONS))
async def test_a_kill_after_any_statement_leaves_the_old_history_until_the_call_applies_once(
    held: Hold, op: str
) -> None:
    run, after = OPERATIONS[op]
    chat = held.store.session("victim")
    total = await statements_of(held, op)
    assert total >= 3, total
    for k in range(1, total + 1):
        await chat.replace_items(OLD)  # with the archive on, it also archives the last run's
        before = await snapshot(held.reader, held.store)
        assert len(before[0]) == 6
        kills = held.killer.kills
        if k < total:  # COMMIT not sent yet: retried once on a fresh connection
            result = await held.run(run(chat), kill_at=[k])
            assert await chat.get_items() == after, k
            if op == "rewind":
                assert result == OLD[2:], k  # removed (and returned) exactly once
        else:  # the COMMIT went down with the connection: the store cannot know
            with pytest.raises(CommitOutcomeUnknownError):
                await held.run(run(chat), kill_at=[k])
            assert await snapshot(held.reader, held.store) == before, k
        assert held.killer.kills == kills + 1, k
        assert held.seen == [before], k  # mid-operation, another connection saw the old state
    await chat.replace_items(NEW)  # and the store goes on working
    assert await chat.get_items() == NEW


@pytest.mark.parametrize("op", list(OPERATIONS))
async def test_a_kill_in_the_retry_too_raises_and_leaves_exactly_the_old_history(
    held: Hold, op: str
) -> None:
    run, after = OPERATIONS[op]
    chat = held.store.session("victim")
    total = await statements_of(held, op)
    await chat.replace_items(OLD)
    before = await snapshot(held.reader, held.store)
    with pytest.raises(DBAPIError) as raised:
        await held.run(run(chat), kill_at=[total // 2, 1])
    assert raised.value.connection_invalidated
    assert held.seen == [before, before]
    assert await snapshot(held.reader, held.store) == before
    assert await chat.get_items() == OLD
    await run(chat)  # a later call works
    assert await chat.get_items() == after
