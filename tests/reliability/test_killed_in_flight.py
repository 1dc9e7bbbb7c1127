"""A connection killed while its write is in flight: the store's rule for each path.

Another connection holds a row lock, so the store's write blocks inside its statement on the
server; the store's connection is then killed from outside. Where the write was running:

* PostgreSQL, driver fast path: add_items and pop_item are single statements sent without
  BEGIN, so sending one is the commit point. For pop_item the store cannot know the
  statement never committed and must raise ``CommitOutcomeUnknownError`` (honest, if
  conservative here: the blocked statement did not commit, and the session is left as it
  was). add_items sends its batch again with the same idempotency key, which waits for the
  lock too and stores the batch once.
* PostgreSQL through Core (an observed engine), and MariaDB on either path: the write runs
  in a transaction whose COMMIT was never sent, so nothing was written; the store retries it
  once on a fresh connection, which waits for the lock too and applies the write once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import pytest
from sqlalchemy import event, text

from agent_session_store import CommitOutcomeUnknownError, SessionStore
from agent_session_store._probe import Path

from ..conftest import ALL_KINDS
from .faults import ConnectionKiller
from .figures import Figures, database_of

SERVERS = [p for p in ALL_KINDS if p.values[0] in ("postgresql", "mariadb")]
pytestmark = pytest.mark.parametrize("db_url", SERVERS, indirect=True)

TIMEOUT = 20.0  # seconds for any one wait; a hang fails instead of blocking the run
BEFORE = [{"n": 1}, {"n": 2}]
BATCH = [{"n": 3}, {"n": 4}]

#: The rows each write needs a lock on: the session row (add), the newest message (pop).
LOCKS = {
    "add": "SELECT session_id FROM agent_sessions WHERE session_id = 'victim' FOR UPDATE",
    "pop": (
        "SELECT id FROM agent_messages WHERE session_id = 'victim' "
        "ORDER BY id DESC LIMIT 1 FOR UPDATE"
    ),
}
#: Server ids of connections waiting for a row lock. InnoDB refreshes innodb_trx only when
#: it was not read for 100 ms, so MariaDB is polled more slowly than that.
WAITING = {
    "postgresql": "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
    "mariadb": (
        "SELECT trx_mysql_thread_id FROM information_schema.innodb_trx "
        "WHERE trx_state = 'LOCK WAIT'"
    ),
}
POLL = {"postgresql": 0.02, "mariadb": 0.25}


@pytest.fixture(params=["driver", "core"])
def path(request: pytest.FixtureRequest) -> str:
    """``driver``: the fast path; ``core``: a statement listener forces SQLAlchemy's path."""
    return str(request.param)


@pytest.fixture
async def killable(db_url: str, path: str) -> AsyncIterator[tuple[SessionStore, ConnectionKiller]]:
    async with SessionStore(db_url) as store:
        killer = ConnectionKiller(store, db_url)  # before the first connection is made
        if path == "core":
            event.listen(store.engine.sync_engine, "before_cursor_execute", _no_op)
        await store.create_tables()
        assert (store._transport.probe.path() is Path.CORE) == (path == "core")
        try:
            yield store, killer
        finally:
            await killer.close()


def _no_op(*args: Any) -> None:
    return None


async def _waiting_for_a_lock(
    killer: ConnectionKiller, task: asyncio.Task[Any], exclude: int | None = None
) -> int:
    """The server id of the store's connection that waits for a row lock, once there is one."""
    dialect = "postgresql" if killer.postgres else "mariadb"
    deadline = time.monotonic() + TIMEOUT
    async with killer.admin.connect() as conn:
        # pg_stat_activity is a snapshot per transaction: look again in a new one each time.
        watcher = await conn.execution_options(isolation_level="AUTOCOMMIT")
        waiting: set[int] = set()
        while True:
            waiting = {int(row[0]) for row in await watcher.execute(text(WAITING[dialect]))}
            found = sorted((waiting & killer.ids) - {exclude})
            if found:
                assert len(found) == 1, f"several of the store's connections wait: {found}"
                return found[0]
            if task.done():
                await task  # raises what ended the call early
                pytest.fail("the call finished without waiting for the lock")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no connection of the store waited for the lock in {TIMEOUT}s "
                    f"(waiting: {sorted(waiting)}, the store's: {sorted(killer.ids)})"
                )
            await asyncio.sleep(POLL[dialect])


async def _call(store: SessionStore, op: str) -> Any:
    if op == "add":
        return await store.add_items("victim", BATCH)
    return await store.pop_item("victim")


def _outcome_is_unknown(store: SessionStore, path: str, op: str) -> bool:
    """Whether the killed statement may have been the commit point (no transaction around it).

    add_items settles that itself: its idempotency key makes sending it again safe.
    """
    return op == "pop" and path == "driver" and store.engine.dialect.name == "postgresql"


@pytest.mark.parametrize("op", ["add", "pop"])
async def test_a_write_killed_while_it_waits_inside_its_statement_follows_the_commit_rule(
    killable: tuple[SessionStore, ConnectionKiller],
    path: str,
    op: str,
    figures: Figures,
    request: pytest.FixtureRequest,
) -> None:
    store, killer = killable
    await store.add_items("victim", BEFORE)
    unknown = _outcome_is_unknown(store, path, op)
    started = time.perf_counter()

    async with killer.admin.connect() as holder:
        await holder.begin()
        assert (await holder.execute(text(LOCKS[op]))).all(), "nothing to lock"
        task = asyncio.create_task(_call(store, op))
        try:
            victim = await _waiting_for_a_lock(killer, task)
            assert await killer.kill(victim)
            if unknown:
                with pytest.raises(CommitOutcomeUnknownError, match="may or may not"):
                    await asyncio.wait_for(asyncio.shield(task), TIMEOUT)
            else:
                # The retry, on a new connection, now waits for the same lock.
                await _waiting_for_a_lock(killer, task, exclude=victim)
                assert not task.done()
        finally:
            await holder.rollback()  # releases the lock, whatever happened above
            with suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), TIMEOUT)
        result = None if unknown else await task

    assert killer.kills == 1
    items = await store.get_items("victim")
    if unknown:
        # The killed statement waited for a lock and never ran: nothing changed.
        assert items == BEFORE
    elif op == "add":
        assert result is None
        assert items == BEFORE + BATCH, "the retried batch was lost or stored twice"
    else:
        assert result == BEFORE[-1]
        assert items == BEFORE[:-1], "the retried pop took no item or two"
    figures.add(
        f"write killed while waiting on a row lock ({op}, {path} path)",
        database_of(request),
        runs=1,
        items=len(BATCH) if op == "add" and not unknown else 0,
        faults=killer.kills,
        lost=0,
        seconds=time.perf_counter() - started,
        note="outcome unknown, not retried" if unknown else "retried once, applied once",
    )

    # The same store keeps working, with no restart.
    await store.add_items("victim", [{"after": True}])
    assert (await store.get_items("victim"))[-1] == {"after": True}
    assert await store.pop_item("victim") == {"after": True}
    assert await store.get_items("victim") == items
