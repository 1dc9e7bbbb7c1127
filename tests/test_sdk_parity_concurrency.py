"""Drop-in parity, concurrency half: tasks, threads and event loops sharing our sessions.

The SDK's suites check that first writes racing table creation lose nothing, that concurrent
poppers never share a row, that a session used from several threads (each with its own event
loop) finishes, and that cancellation leaves a known outcome. Thread tests join with a timeout
and fail on it: a hang fails the test, it never stalls the suite.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import subprocess
import sys
import weakref
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agent_session_store import SessionStore, SQLAlchemySession

#: Seconds a child process running threads may take before the test fails.
CHILD_TIMEOUT = 60
ROOT = Path(__file__).resolve().parents[1]
FIRST_WRITERS = 25


def say(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content}


def contents(items: list[Any]) -> list[Any]:
    return [item.get("content") for item in items]


def in_child_process(scenario: str, url: str) -> Any:
    """Run a scenario of ``tests._threads_child``; fail on a crash, a hang or an error."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests._threads_child", scenario, url],
            cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{scenario} still running after {CHILD_TIMEOUT} s", pytrace=False)
    if done.returncode != 0:
        pytest.fail(
            f"{scenario} exited with {done.returncode}: {done.stderr[-2000:]}", pytrace=False
        )
    return json.loads(done.stdout.splitlines()[-1])


# -- tasks on one loop --------------------------------------------------------------------------


async def test_two_sessions_popping_one_history_at_once_each_get_a_different_item(
    engine: AsyncEngine,
) -> None:
    writer = SQLAlchemySession("pop-race", engine=engine, create_tables=True)
    other = SQLAlchemySession("pop-race", engine=engine)
    await writer.add_items([say("first"), say("second")])
    popped = await asyncio.wait_for(asyncio.gather(writer.pop_item(), other.pop_item()), 10)
    assert sorted(contents(popped)) == ["first", "second"]
    await writer.add_items([say("only")])
    popped = await asyncio.wait_for(asyncio.gather(writer.pop_item(), other.pop_item()), 10)
    assert sorted(map(str, popped)) == sorted([str(say("only")), "None"])


async def test_first_writes_racing_table_creation_all_land(db_url: str) -> None:
    session = SQLAlchemySession.from_url("first-writes", url=db_url, create_tables=True)
    submitted = [f"msg-{i}" for i in range(FIRST_WRITERS)]
    try:
        await asyncio.gather(*(session.add_items([say(c)]) for c in submitted))
        assert sorted(contents(await session.get_items())) == sorted(submitted)
    finally:
        await session.engine.dispose()


async def test_first_writes_racing_creation_of_the_session_row_all_land(
    shared_db_url: str,
) -> None:
    setup = SQLAlchemySession.from_url("first-row", url=shared_db_url, create_tables=True)
    await setup.get_items()
    await setup.engine.dispose()
    session = SQLAlchemySession.from_url("first-row", url=shared_db_url)
    submitted = [f"msg-{i}" for i in range(FIRST_WRITERS)]
    try:
        await asyncio.gather(*(session.add_items([say(c)]) for c in submitted))
        assert sorted(contents(await session.get_items())) == sorted(submitted)
    finally:
        await session.engine.dispose()


async def test_sessions_sharing_an_engine_create_the_tables_once_and_keep_their_items(
    engine: AsyncEngine,
) -> None:
    one = SQLAlchemySession("shared_a", engine=engine, create_tables=True)
    two = SQLAlchemySession("shared_b", engine=engine, create_tables=True)
    await asyncio.gather(one.add_items([say("one")]), two.add_items([say("two")]))
    assert contents(await one.get_items()) == ["one"]
    assert contents(await two.get_items()) == ["two"]


async def test_from_url_sessions_on_one_database_create_the_tables_at_once(
    shared_db_url: str,
) -> None:
    one = SQLAlchemySession.from_url("url_a", url=shared_db_url, create_tables=True)
    two = SQLAlchemySession.from_url("url_b", url=shared_db_url, create_tables=True)
    try:
        await asyncio.gather(one.add_items([say("one")]), two.add_items([say("two")]))
        assert contents(await one.get_items()) == ["one"]
        assert contents(await two.get_items()) == ["two"]
    finally:
        await one.engine.dispose()
        await two.engine.dispose()


@pytest.mark.sqlite
async def test_add_items_waits_out_another_connections_brief_sqlite_write_lock(
    tmp_path: Any,
) -> None:
    path = tmp_path / "locked.db"
    session = SQLAlchemySession.from_url(
        "locked", url=f"sqlite+aiosqlite:///{path}", create_tables=True
    )
    try:
        await session.get_items()
        holder = sqlite3.connect(str(path), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        blocked = asyncio.create_task(session.add_items([say("after-lock")]))
        await asyncio.sleep(0.1)
        holder.execute("ROLLBACK")
        holder.close()
        await asyncio.wait_for(blocked, 5)
        assert contents(await session.get_items()) == ["after-lock"]
    finally:
        await session.engine.dispose()


async def test_cancelling_a_write_waiting_on_table_creation_leaves_later_writes_working(
    db_url: str,
) -> None:
    session = SQLAlchemySession.from_url("cancel-init", url=db_url, create_tables=True)
    try:
        waiter = asyncio.create_task(session.add_items([say("waiter")]))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.wait_for(session.add_items([say("follower")]), 10)
        assert contents(await session.get_items())[-1] == "follower"
    finally:
        await session.engine.dispose()


@pytest.mark.parametrize("operation", ["add", "pop", "clear"])
async def test_a_cancelled_write_raises_cancelled_and_is_applied_whole_or_not_at_all(
    store: SessionStore, operation: str
) -> None:
    """Cancelled at every point from before it starts to just before it ends, a write never
    leaves half its effect, the caller sees ``CancelledError``, and the session keeps working."""
    before = [say("kept 1"), say("kept 2")]
    for ticks in range(40):
        session = store.session(f"{operation}-{ticks}")
        await session.add_items(before)
        if operation == "add":
            call: Awaitable[Any] = session.add_items([say("new 1"), say("new 2")])
            after = [*before, say("new 1"), say("new 2")]
        elif operation == "pop":
            call, after = session.pop_item(), before[:1]
        else:
            call, after = session.clear_session(), []
        task = asyncio.ensure_future(call)
        for _ in range(ticks):
            await asyncio.sleep(0)
        if not task.cancel():
            await task  # it finished first, as it will with more ticks
            break
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        stored = await session.get_items()
        assert stored in (before, after), f"cancelled after {ticks} ticks left {stored}"
        await session.add_items([say("still works")])


async def test_a_dropped_session_does_not_keep_its_engine_alive(shared_db_url: str) -> None:
    """The SDK's registry tests: short-lived sessions must not pile up engines."""
    engine = create_async_engine(shared_db_url)
    session = SQLAlchemySession("short-lived", engine=engine, create_tables=True)
    await session.add_items([say("turn")])
    await engine.dispose()
    alive = weakref.ref(engine.sync_engine)
    del session, engine
    gc.collect()
    assert alive() is None


# -- threads, each with its own event loop (in a child process: see tests/_threads_child.py) ---


async def test_from_url_sessions_in_two_threads_with_their_own_loops_both_finish(
    shared_db_url: str,
) -> None:
    result = await asyncio.to_thread(in_child_process, "separate_sessions", shared_db_url)
    assert result == [["one"], ["two"]]


async def test_one_session_shared_by_two_threads_with_their_own_loops_keeps_both_items(
    shared_db_url: str,
) -> None:
    result = await asyncio.to_thread(in_child_process, "two_threads_one_session", shared_db_url)
    assert result == ["Message 0", "Message 1"]


async def test_one_session_written_from_five_threads_each_with_its_own_loop_keeps_every_item(
    shared_db_url: str,
) -> None:
    """The SDK's SQLiteSession concurrent-access test: ten writes over five threads."""
    result = await asyncio.to_thread(in_child_process, "five_threads_one_session", shared_db_url)
    assert result == sorted(f"Message {i}" for i in range(10))
