"""Writes the server rolls back are retried until a deadline, with capped, jittered sleeps.

The contention is real: another connection holds the lock the store's write needs (a row
lock on PostgreSQL and MariaDB, the write lock on SQLite), and the store's connections give
up waiting quickly (``lock_timeout``, ``innodb_lock_wait_timeout``, ``busy_timeout``), so
each attempt ends in the server's own "rolled back, try again" error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import SessionStore
from agent_session_store._retry import MAX_SLEEP_S, RetryPolicy
from agent_session_store.errors import ArgumentTypeError, InvalidArgumentError
from tests.conftest import dialect_of

SESSION = "contended"


def _impatient_kwargs(url: str, lock_wait_s: float | None) -> dict[str, Any]:
    """Engine arguments that make the store's connections stop waiting for a lock soon."""
    kind = dialect_of(url)
    if kind == "postgresql":
        wait_ms = 100 if lock_wait_s is None else round(lock_wait_s * 1000)
        return {"connect_args": {"server_settings": {"lock_timeout": f"{wait_ms}ms"}}}
    if kind == "mariadb":
        wait = 1 if lock_wait_s is None else round(lock_wait_s)  # whole seconds only
        return {"connect_args": {"init_command": f"SET SESSION innodb_lock_wait_timeout = {wait}"}}
    return {}


def _impatient_store(url: str, lock_wait_s: float | None = None, **options: Any) -> SessionStore:
    """A store whose lock waits end after ``lock_wait_s`` (default: 50 ms to 1 s by dialect)."""
    store = SessionStore(url, engine_kwargs=_impatient_kwargs(url, lock_wait_s), **options)
    if dialect_of(url) == "sqlite":
        busy_ms = 50 if lock_wait_s is None else round(lock_wait_s * 1000)

        def short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.close()

        # Registered after the store's own listener, so it runs after it and wins.
        event.listen(store.engine.sync_engine, "connect", short_busy_timeout)
    return store


@asynccontextmanager
async def _lock_held(url: str) -> AsyncIterator[AsyncConnection]:
    """Another connection holding what a write to ``SESSION`` needs, until the block ends."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            if dialect_of(url) == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                await conn.execute(
                    text("SELECT session_id FROM agent_sessions WHERE session_id = :s FOR UPDATE"),
                    {"s": SESSION},
                )
            try:
                yield conn
            finally:
                await conn.rollback()
    finally:
        await engine.dispose()


@pytest.fixture
async def contended_url(shared_db_url: str) -> str:
    """A database with ``SESSION`` holding one item."""
    async with SessionStore(shared_db_url) as store:
        await store.create_tables()
        await store.add_items(SESSION, [{"n": 0}])
    return shared_db_url


async def test_a_write_blocked_past_the_retry_deadline_raises_the_servers_last_error(
    contended_url: str,
) -> None:
    async with _impatient_store(contended_url, retry_deadline=1.5) as store:
        async with _lock_held(contended_url):
            with pytest.raises(DBAPIError) as raised:
                await store.add_items(SESSION, [{"n": 1}])
        stats = store.retry_stats
        assert store._retry.kind_of(raised.value) is not None  # the rolled-back kind, as is
        assert stats.gave_up == 1
        assert stats.most_attempts >= 2
        assert stats.longest_wait_s <= 1.5
        assert await store.get_items(SESSION) == [{"n": 0}]  # nothing half-written


async def test_a_write_blocked_for_less_than_the_deadline_succeeds_after_retries(
    contended_url: str,
) -> None:
    async with _impatient_store(contended_url, retry_deadline=30) as store:
        async with _lock_held(contended_url):
            write = asyncio.ensure_future(store.add_items(SESSION, [{"n": 1}]))
            # The lock stays held past several of the store's lock waits (1 s on MariaDB).
            await asyncio.sleep(2.5)
            assert not write.done()
        await write
        stats = store.retry_stats
        assert stats.calls_retried == 1 and stats.retries >= 1 and stats.gave_up == 0
        assert await store.get_items(SESSION) == [{"n": 0}, {"n": 1}]  # stored once


async def test_a_first_attempt_that_outlasted_the_deadline_still_gets_its_retries(
    contended_url: str,
) -> None:
    # The deadline runs from the first failure, not from the call: a write stalled for longer
    # than the deadline (a Galera cluster waiting out a dead node, a long lock wait) and then
    # rolled back is retried, and gets through once the stall is over.
    async with _impatient_store(contended_url, lock_wait_s=2.0, retry_deadline=1.5) as store:
        async with _lock_held(contended_url):
            write = asyncio.ensure_future(store.add_items(SESSION, [{"n": 1}]))
            await asyncio.sleep(2.5)  # the first attempt gave up at 2 s, past the deadline
            assert not write.done()
        await write
        stats = store.retry_stats
        assert stats.calls_retried == 1 and stats.retries >= 1 and stats.gave_up == 0
        assert await store.get_items(SESSION) == [{"n": 0}, {"n": 1}]  # stored once


async def test_retry_deadline_zero_never_retries(contended_url: str) -> None:
    async with _impatient_store(contended_url, retry_deadline=0) as store:
        async with _lock_held(contended_url):
            with pytest.raises(DBAPIError):
                await store.add_items(SESSION, [{"n": 1}])
        assert store.retry_stats.retries == 0 and store.retry_stats.most_attempts == 1
        assert await store.get_items(SESSION) == [{"n": 0}]


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_a_bad_retry_deadline_is_refused(bad: float) -> None:
    with pytest.raises(InvalidArgumentError, match="retry_deadline"):
        SessionStore("sqlite+aiosqlite:///:memory:", retry_deadline=bad)


def test_a_retry_deadline_of_another_type_is_refused() -> None:
    with pytest.raises(ArgumentTypeError, match="retry_deadline"):
        SessionStore("sqlite+aiosqlite:///:memory:", retry_deadline="10s")  # type: ignore[arg-type]


def test_a_timedelta_retry_deadline_is_taken_in_seconds() -> None:
    store = SessionStore("sqlite+aiosqlite:///:memory:", retry_deadline=timedelta(minutes=1))
    assert store._retry.deadline_s == 60.0


def test_backoff_sleeps_are_capped_jittered_and_end_at_the_deadline() -> None:
    policy = RetryPolicy(deadline_s=3.0)
    clock = policy.start()
    sleeps: list[float] = []
    while (sleep := clock.next_sleep("test")) is not None and len(sleeps) < 200:
        sleeps.append(sleep)
        clock._deadline -= sleep  # as if it had slept, without waiting
    assert all(0 <= s <= MAX_SLEEP_S for s in sleeps)
    assert sum(sleeps) <= 3.0 + 1e-9
    assert len(set(sleeps)) > len(sleeps) // 2  # jittered: not one fixed step
    assert max(sleeps[:3]) <= 0.02  # small at first: the bound doubles from 5 ms
    assert policy.stats.retries == len(sleeps) and policy.stats.gave_up == 1
