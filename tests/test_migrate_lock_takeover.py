"""An upgrader killed while it holds the migration lock does not hold up the next one.

PostgreSQL's advisory lock, MariaDB's ``GET_LOCK`` and SQLite's write lock die with their
holder's connection. The Galera lock is a row, which outlives its holder: the next upgrader
sees the holder's connection gone and takes the row over at once (checked here on a MariaDB
without Galera, which takes the same row lock when told it is Galera), waits for a holder that
is alive however old its row, and takes over a row it cannot check only once it is stale.
"""

from __future__ import annotations

import asyncio
import sys
import time
from contextlib import AbstractContextManager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import InvalidArgumentError, MigrationError, check, current
from agent_session_store._cluster_lock import LOCK_TABLE, cluster_lock
from agent_session_store._migration import LOCK_STALE_AFTER_ENV, lock_stale_after
from agent_session_store.migrate import head_revision

from .conftest import ALL_KINDS, reset_database, server_url

NAMES = {"sessions_table": "kill_sessions", "messages_table": "kill_messages"}

# argv: url, "row" (take the Galera lock row) or "native", "hang" (stop, holding the lock, at
# the first CREATE TABLE of a revision) or "finish".
UPGRADER = """
import asyncio, sys, time
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from agent_session_store import _migration, upgrade

url, lock, mode = sys.argv[1:4]
if lock == "row":  # the lock a Galera cluster gets, on a server without Galera
    _migration.is_galera = lambda connection: True
engine = create_async_engine(url, poolclass=NullPool)

@event.listens_for(engine.sync_engine, "before_cursor_execute")
def hang(conn, cursor, statement, *args):
    ddl = statement.lstrip().upper()
    if mode == "hang" and ddl.startswith("CREATE TABLE") and "AGENT_SESSION_STORE_LOCK" not in ddl:
        print("holding", flush=True)
        time.sleep(3600)

async def main():
    await upgrade(engine, sessions_table="kill_sessions", messages_table="kill_messages")
    await engine.dispose()

asyncio.run(main())
print("upgraded", flush=True)
"""

MARIADB = [p for p in ALL_KINDS if p.values[0] == "mariadb"]


@pytest.fixture(params=MARIADB)
async def mariadb_url(request: pytest.FixtureRequest) -> str:
    """An empty MariaDB database (the row lock is MySQL/MariaDB SQL)."""
    url = server_url(request.param)
    await reset_database(url)
    return url


async def _spawn(url: str, lock: str, mode: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", UPGRADER, url, lock, mode,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def _kill_while_holding(url: str, lock: str) -> None:
    holder = await _spawn(url, lock, "hang")
    assert holder.stdout is not None
    try:
        line = await asyncio.wait_for(holder.stdout.readline(), timeout=60)
    except TimeoutError:
        holder.kill()
        raise
    if line != b"holding\n":
        holder.kill()
        _, err = await holder.communicate()
        pytest.fail(f"the first upgrader did not reach a revision: {err.decode()}")
    holder.kill()  # SIGKILL: no finally, no release, no goodbye to the server
    await holder.wait()


async def _upgrade_in_time(url: str, lock: str, limit: float) -> tuple[float, str]:
    started = time.monotonic()
    second = await _spawn(url, lock, "finish")
    try:
        out, err = await asyncio.wait_for(second.communicate(), timeout=limit)
    except TimeoutError:
        second.kill()
        await second.wait()
        pytest.fail(f"the next upgrade was still waiting after {limit:.0f}s")
    assert second.returncode == 0 and out == b"upgraded\n", err.decode()
    return time.monotonic() - started, err.decode()


async def _is_upgraded(url: str) -> None:
    assert await current(url, **NAMES) == head_revision()
    await check(url, **NAMES)


@pytest.mark.slow
async def test_an_upgrader_killed_holding_the_lock_does_not_hold_up_the_next(
    shared_db_url: str,
) -> None:
    await _kill_while_holding(shared_db_url, "native")
    elapsed, _ = await _upgrade_in_time(shared_db_url, "native", limit=60)
    assert elapsed < 30
    await _is_upgraded(shared_db_url)


@pytest.mark.slow
async def test_a_lock_row_whose_holder_was_killed_is_taken_over_at_once(
    mariadb_url: str,
) -> None:
    await _kill_while_holding(mariadb_url, "row")
    # The row outlived its holder; before, the next upgrader waited 600 s for it to go stale.
    assert await _lock_rows(mariadb_url) == 1
    elapsed, err = await _upgrade_in_time(mariadb_url, "row", limit=60)
    assert elapsed < 30
    assert "whose connection is gone" in err
    await _is_upgraded(mariadb_url)
    assert await _lock_rows(mariadb_url) == 0


async def _lock_rows(url: str) -> int:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(f"SELECT COUNT(*) FROM {LOCK_TABLE}"))).scalar())
    finally:
        await engine.dispose()


async def test_a_live_holder_is_waited_for_however_old_its_row(mariadb_url: str) -> None:
    engine = create_async_engine(mariadb_url, poolclass=NullPool)
    held: list[AbstractContextManager[None]] = []

    def take(conn: Connection) -> None:
        lock = cluster_lock(conn, "live", timeout=5, stale_after=600)
        lock.__enter__()
        held.append(lock)
        conn.execute(text(f"UPDATE {LOCK_TABLE} SET taken_at = taken_at - INTERVAL 1 HOUR"))
        conn.commit()

    def wait_briefly(conn: Connection) -> None:
        with cluster_lock(conn, "live", timeout=1.5, stale_after=1):
            pass

    try:
        async with engine.connect() as holder, engine.connect() as waiter:
            await holder.run_sync(take)
            with pytest.raises(MigrationError, match=r"'live' is held by .* conn "):
                await waiter.run_sync(wait_briefly)
            await holder.run_sync(lambda _: held[0].__exit__(None, None, None))
            await waiter.run_sync(wait_briefly)  # released: taken at once
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "holder",
    ["other-node:1:0123456789ab conn 000000000000/1", "older-version:1:0123456789ab"],
    ids=["another node or account", "no connection recorded"],
)
async def test_a_row_that_cannot_be_checked_is_taken_over_once_stale(
    mariadb_url: str, holder: str
) -> None:
    engine = create_async_engine(mariadb_url, poolclass=NullPool)

    def plant(conn: Connection) -> None:
        with cluster_lock(conn, "setup", timeout=5, stale_after=600):
            pass  # creates the table
        conn.execute(
            text(f"INSERT INTO {LOCK_TABLE} VALUES ('planted', :holder, UTC_TIMESTAMP(6))"),
            {"holder": holder},
        )
        conn.commit()

    def take(conn: Connection) -> tuple[float, Any]:
        started = time.monotonic()
        with cluster_lock(conn, "planted", timeout=20, stale_after=2):
            mine = conn.execute(text(f"SELECT holder FROM {LOCK_TABLE}")).scalar()
            conn.rollback()
        return time.monotonic() - started, mine

    try:
        async with engine.connect() as conn:
            await conn.run_sync(plant)
            elapsed, mine = await conn.run_sync(take)
    finally:
        await engine.dispose()
    assert 1.5 < elapsed < 10, elapsed
    assert mine != holder


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 600.0), ("", 600.0), ("30", 30.0), ("2.5", 2.5), ("abc", "must be a number"),
     ("0", "must be a positive"), ("-5", "must be a positive"), ("inf", "must be a positive")],
)
def test_the_stale_age_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: float | str
) -> None:
    if raw is None:
        monkeypatch.delenv(LOCK_STALE_AFTER_ENV, raising=False)
    else:
        monkeypatch.setenv(LOCK_STALE_AFTER_ENV, raw)
    if isinstance(expected, float):
        assert lock_stale_after() == expected
    else:
        with pytest.raises(InvalidArgumentError, match=f"{LOCK_STALE_AFTER_ENV} {expected}"):
            lock_stale_after()
