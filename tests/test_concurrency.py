"""Concurrency across processes, and SQLite's cold start under many sessions at once."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from agent_session_store import SessionStore, SQLAlchemySession

WRITERS = 4
BATCHES = 15
BATCH_SIZE = 5


def _write_batches(url: str, writer: int) -> None:
    async def run() -> None:
        async with SessionStore(url) as store:
            session = store.session("shared")
            for batch in range(BATCHES):
                await session.add_items(
                    [{"writer": writer, "batch": batch, "i": i} for i in range(BATCH_SIZE)]
                )

    asyncio.run(run())


async def test_writers_in_several_processes_never_lose_duplicate_or_split_a_batch(
    shared_db_url: str,
) -> None:
    async with SessionStore(shared_db_url) as store:
        await store.create_tables()
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_write_batches, args=(shared_db_url, w)) for w in range(WRITERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * WRITERS

    async with SessionStore(shared_db_url) as store:
        items = await store.session("shared").get_items()
    assert len(items) == WRITERS * BATCHES * BATCH_SIZE
    keys = {(i["writer"], i["batch"], i["i"]) for i in items}
    assert len(keys) == len(items)  # nothing duplicated, and by the count nothing lost
    for start in range(0, len(items), BATCH_SIZE):
        batch = items[start : start + BATCH_SIZE]
        assert len({(i["writer"], i["batch"]) for i in batch}) == 1, "a batch was split"
        assert [i["i"] for i in batch] == list(range(BATCH_SIZE))
    for writer in range(WRITERS):
        order = [i["batch"] for i in items if i["writer"] == writer and i["i"] == 0]
        assert order == list(range(BATCHES)), "a writer's batches were reordered"


async def _cold_start_one_store(path: Path, sessions: int) -> list[Any]:
    async with SessionStore(f"sqlite+aiosqlite:///{path}") as store:
        async def first_use(n: int) -> Any:
            session = SQLAlchemySession(f"s{n}", store=store, create_tables=True)
            await session.add_items([{"n": n}])
            return await session.get_items()

        return await asyncio.gather(*(first_use(n) for n in range(sessions)))


async def _cold_start_engine_per_session(path: Path, sessions: int) -> list[Any]:
    # The harshest form: like the SDK's from_url, every session brings its own engine.
    created = [
        SQLAlchemySession.from_url(f"s{n}", url=f"sqlite+aiosqlite:///{path}", create_tables=True)
        for n in range(sessions)
    ]

    async def first_use(n: int, session: SQLAlchemySession) -> Any:
        await session.add_items([{"n": n}])
        return await session.get_items()

    try:
        return await asyncio.gather(*(first_use(n, s) for n, s in enumerate(created)))
    finally:
        for session in created:
            await session.engine.dispose()


@pytest.mark.sqlite
@pytest.mark.parametrize("run", range(5))
@pytest.mark.parametrize("mode", ["one_store", "engine_per_session"])
async def test_sqlite_cold_start_with_fifty_sessions_at_once_never_reports_locked(
    tmp_path: Path, run: int, mode: str
) -> None:
    path = tmp_path / f"cold-{run}.db"
    starter = _cold_start_one_store if mode == "one_store" else _cold_start_engine_per_session
    results = await starter(path, 50)
    assert results == [[{"n": n}] for n in range(50)]


@pytest.mark.sqlite
async def test_sqlite_file_connections_use_wal_a_busy_timeout_and_foreign_keys(
    tmp_path: Path,
) -> None:
    from sqlalchemy import text

    store = SessionStore(f"sqlite+aiosqlite:///{tmp_path / 'wal.db'}")
    async with store, store.engine.connect() as conn:
        mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
        timeout = (await conn.execute(text("PRAGMA busy_timeout"))).scalar()
        foreign_keys = (await conn.execute(text("PRAGMA foreign_keys"))).scalar()
    assert (mode, foreign_keys) == ("wal", 1)
    assert timeout is not None and timeout >= 5000
