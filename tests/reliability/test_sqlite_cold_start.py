"""A fresh SQLite file used by many sessions, or two processes, at once: no "database is locked"."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent_session_store import SessionStore, SQLAlchemySession

from .figures import Figures
from .workers import first_use, run_processes

pytestmark = pytest.mark.sqlite

ROUNDS = 20
SESSIONS = 50
PROCESS_ROUNDS = 5
WAL_ROUNDS = 150


async def test_fifty_sessions_first_used_at_once_on_a_fresh_file_never_fail(
    tmp_path: Path, figures: Figures
) -> None:
    errors: list[BaseException] = []
    started = time.perf_counter()
    for round_ in range(ROUNDS):
        async with SessionStore(f"sqlite+aiosqlite:///{tmp_path / f'cold-{round_}.db'}") as store:

            async def first_call(n: int, store: SessionStore = store) -> None:
                session = SQLAlchemySession(f"s{n}", store=store, create_tables=True)
                await session.add_items([{"role": "user", "content": f"first {n}"}])
                assert await session.get_items() == [{"role": "user", "content": f"first {n}"}]

            results = await asyncio.gather(
                *(first_call(n) for n in range(SESSIONS)), return_exceptions=True
            )
            errors += [r for r in results if isinstance(r, BaseException)]
    figures.add(
        "SQLite cold start: 50 sessions at once on a fresh file",
        "sqlite_file",
        runs=ROUNDS,
        items=ROUNDS * SESSIONS,
        lost=len(errors),
        seconds=time.perf_counter() - started,
    )
    assert errors == []


async def test_two_processes_starting_on_one_fresh_file_never_fail(
    tmp_path: Path, figures: Figures
) -> None:
    errors: list[str] = []
    started = time.perf_counter()
    for round_ in range(PROCESS_ROUNDS):
        url = f"sqlite+aiosqlite:///{tmp_path / f'shared-{round_}.db'}"
        errors += await asyncio.to_thread(run_processes, url, 2, first_use, SESSIONS)
        async with SessionStore(url) as store:
            for proc in range(2):
                for n in range(SESSIONS):
                    items = await store.session(f"cold-{proc}-{n}").get_items()
                    assert items == [{"role": "user", "content": f"hello {n}"}]
    figures.add(
        "SQLite cold start: 2 processes x 50 sessions on a fresh file",
        "sqlite_file",
        runs=PROCESS_ROUNDS,
        items=PROCESS_ROUNDS * 2 * SESSIONS,
        lost=len(errors),
        seconds=time.perf_counter() - started,
    )
    assert errors == []


async def test_first_connections_racing_to_switch_a_fresh_file_to_wal_never_fail(
    tmp_path: Path, figures: Figures
) -> None:
    # Each store has its own connection thread, so their first connections really race.
    errors: list[BaseException] = []
    started = time.perf_counter()
    for round_ in range(WAL_ROUNDS):
        url = f"sqlite+aiosqlite:///{tmp_path / f'wal-{round_}.db'}"
        stores = [SessionStore(url) for _ in range(6)]

        async def first_connection(store: SessionStore) -> None:
            async with store.engine.connect() as conn:
                await conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
                await conn.commit()

        results = await asyncio.gather(*map(first_connection, stores), return_exceptions=True)
        errors += [r for r in results if isinstance(r, BaseException)]
        for store in stores:
            await store.close()
    figures.add(
        "SQLite: 6 first connections racing to switch a fresh file to WAL",
        "sqlite_file",
        runs=WAL_ROUNDS * 6,
        items=0,
        lost=len(errors),
        seconds=time.perf_counter() - started,
        note=f"{len(errors)} errors" + (f": {errors[0]}" if errors else ""),
    )
    assert errors == []
