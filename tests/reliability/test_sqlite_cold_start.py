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
