"""One store, several event loops: ``asyncio.run`` per call, and threads each with a loop.

Flask or Django sync views, Celery tasks, scripts and notebooks call ``asyncio.run(...)`` per
request; worker threads each run their own loop. A store that made its engine serves them all;
a store on a host's engine used from a loop its connections don't belong to raises one clear
error. These tests are synchronous: each loop is one the test makes, and every thread is joined
with a timeout so a hang fails the test instead of the run.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from agent_session_store import SessionStore
from agent_session_store.errors import AgentSessionStoreError

from .conftest import SHARED_KINDS, _url_for, dialect_of, reset_database

JOIN_TIMEOUT = 60  # seconds for every thread of a test


@pytest.fixture(params=SHARED_KINDS)
def loop_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database that connections of several loops (and threads) can share."""
    url = _url_for(request.param, tmp_path)
    if dialect_of(url) != "sqlite":
        asyncio.run(reset_database(url))
    return url


def msg(i: int) -> dict[str, Any]:
    return {"role": "user", "content": f"message {i}"}


class LoopCallError(Exception):
    """A call in a thread's own loop raised: its text, and whether it was our clear error."""

    def __init__(self, text: str, clear: bool) -> None:
        super().__init__(text)
        self.clear = clear


def _is_clear_loop_error(exc: BaseException) -> bool:
    return (
        isinstance(exc, AgentSessionStoreError)
        and isinstance(exc, RuntimeError)
        and "loop" in str(exc)
    )


def in_threads(count: int, work: Callable[[int], Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads at once, each with ``asyncio.run`` (its own loop).

    Every thread is joined with a timeout: a hang (even in ``asyncio.run``'s own shutdown)
    fails the test. Returns each thread's result; raises ``LoopCallError`` for the first error.
    """
    results: list[Any] = [None] * count
    errors: list[LoopCallError] = []
    start = threading.Barrier(count)

    def main(i: int) -> None:
        try:
            start.wait(JOIN_TIMEOUT)
            results[i] = asyncio.run(work(i))
        except BaseException as exc:
            # Only text leaves the thread, and its garbage is collected here: a suspended
            # greenlet freed from another thread upsets CPython 3.11's recursion counter, and
            # pytest then crashes formatting a later failure (AST recursion depth mismatch).
            errors.append(LoopCallError(f"thread {i}: {exc!r}", _is_clear_loop_error(exc)))
            del exc
        finally:
            gc.collect()

    threads = [threading.Thread(target=main, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"still running after {JOIN_TIMEOUT}s (a hang): {hung}"
    if errors:
        raise errors[0]
    return results


def run(call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """``asyncio.run(call())`` as a script would, in a fresh loop, bounded by the timeout."""
    return in_threads(1, lambda _: call())[0]


def test_a_store_that_made_its_engine_serves_asyncio_run_per_call(loop_url: str) -> None:
    store = SessionStore(loop_url)
    run(store.create_tables)
    for i in range(10):
        run(lambda i=i: store.add_items("per-call", [msg(i)]))
    assert run(lambda: store.get_items("per-call")) == [msg(i) for i in range(10)]
    assert run(lambda: store.pop_item("per-call")) == msg(9)
    assert run(lambda: store.count_items("per-call")) == 9
    run(lambda: store.clear_session("per-call"))
    assert run(lambda: store.get_items("per-call")) == []
    run(store.close)


def test_a_store_that_made_its_engine_serves_four_threads_each_with_its_own_loop(
    loop_url: str,
) -> None:
    store = SessionStore(loop_url)
    run(store.create_tables)

    async def work(i: int) -> None:
        session = store.session(f"thread-{i}")
        for n in range(5):
            await session.add_items([msg(n)])
        assert await session.get_items() == [msg(n) for n in range(5)]
        assert await session.pop_item() == msg(4)

    in_threads(4, work)
    for i in range(4):
        assert run(lambda i=i: store.get_items(f"thread-{i}")) == [msg(n) for n in range(4)]
    run(store.close)


def test_a_store_on_a_hosts_engine_used_from_another_loop_raises_one_clear_error(
    loop_url: str,
) -> None:
    """The host's connections belong to the loop that opened them: say so, don't misbehave.

    SQLite's connections (a thread each) belong to no loop, so there the store may serve the
    second loop; if it refuses instead, it must refuse in the same clear way.
    """
    engine = create_async_engine(loop_url)
    store = SessionStore(engine)

    async def first() -> None:
        await store.create_tables()
        await store.add_items("host", [msg(0)])

    run(first)
    try:
        items = run(lambda: store.get_items("host"))
    except LoopCallError as failed:
        assert failed.clear, f"not one clear error saying the loop is wrong: {failed}"
        return
    assert dialect_of(loop_url) == "sqlite", f"another loop used the host's pool: {items}"
    assert items == [msg(0)]


@pytest.mark.sqlite
def test_one_sqlite_session_used_from_five_threads_with_their_own_loops_finishes(
    tmp_path: Path,
) -> None:
    store = SessionStore(f"sqlite+aiosqlite:///{tmp_path / 'threads.db'}")
    run(store.create_tables)
    session = store.session("shared")

    async def work(i: int) -> None:
        for n in range(4):
            await session.add_items([{"thread": i, "n": n}])
        assert len(await session.get_items()) >= 4

    in_threads(5, work)
    items = run(session.get_items)
    assert sorted((item["thread"], item["n"]) for item in items) == [
        (i, n) for i in range(5) for n in range(4)
    ]
    run(store.close)
