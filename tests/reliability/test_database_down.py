"""A database server that crashes and comes back: fast clear errors, then the same store works."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from agent_session_store import CommitOutcomeUnknownError, DatabaseConnectionError, SessionStore

from .figures import Figures, database_of
from .servers import PASSWORD, PrivateMariaDB, PrivatePostgres

WRITERS = 4
#: "Fast" is generous so a loaded CI machine passes; the figures table shows the real times.
FAST_SECONDS = 5.0


async def test_calls_fail_fast_and_clearly_while_the_database_is_down_and_the_same_store_recovers(
    private_server: PrivatePostgres | PrivateMariaDB,
    figures: Figures,
    request: pytest.FixtureRequest,
) -> None:
    server = private_server
    async with SessionStore(server.url) as store:
        await store.create_tables()
        session = store.session("down")
        await session.add_items([{"n": 0}, {"n": 1}])
        await asyncio.gather(*(session.get_items() for _ in range(4)))  # several pooled connections

        await asyncio.to_thread(server.stop)
        calls = {
            "get_items": session.get_items,
            "add_items": lambda: session.add_items([{"n": 2}]),
            "pop_item": session.pop_item,
            "clear_session": session.clear_session,
        }
        slowest = 0.0
        for name, call in calls.items():
            started = time.perf_counter()
            with pytest.raises(DatabaseConnectionError) as raised:
                await call()
            slowest = max(slowest, time.perf_counter() - started)
            message = str(raised.value)
            assert f"127.0.0.1:{server.port}" in message, name
            assert "server is running" in message, name
            assert PASSWORD not in message, name

        await asyncio.to_thread(server.start)
        assert await session.get_items() == [{"n": 0}, {"n": 1}]
        await session.add_items([{"n": 2}])
        assert await session.pop_item() == {"n": 2}
        await session.clear_session()
        assert await session.get_items() == []
    figures.add(
        "database down, then up (each call while down)",
        database_of(request),
        runs=len(calls),
        items=3,
        faults=len(calls),
        seconds=slowest,
        note="seconds: the slowest refused call",
    )
    assert slowest < FAST_SECONDS


async def test_writers_running_through_a_crash_and_restart_lose_and_duplicate_nothing(
    private_server: PrivatePostgres | PrivateMariaDB,
    figures: Figures,
    request: pytest.FixtureRequest,
) -> None:
    server = private_server
    outcomes: dict[tuple[int, int], str] = {}
    batches: dict[tuple[int, int], list[dict[str, int]]] = {}
    phase = "before"
    ok_after = Counter[int]()
    rode_through = [0]

    async with SessionStore(server.url) as store:
        await store.create_tables()

        async def writer(w: int) -> None:
            session = store.session(f"crash-{w}")
            b = 0
            while ok_after[w] < 20:
                batch = [{"w": w, "b": b, "i": i} for i in range(1 + b % 3)]
                batches[w, b] = batch
                began = phase
                try:
                    await session.add_items(batch)
                    outcomes[w, b] = "ok"
                    ok_after[w] += phase == "after"
                    # Begun before the restart, answered after it: settled by its key.
                    rode_through[0] += began != "after" and phase == "after"
                except CommitOutcomeUnknownError:
                    outcomes[w, b] = "unknown"
                except DatabaseConnectionError:
                    outcomes[w, b] = "refused"
                    await asyncio.sleep(0.01)
                b += 1

        started = time.perf_counter()
        writers = [asyncio.create_task(writer(w)) for w in range(WRITERS)]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(server.stop)
        phase = "down"
        await asyncio.sleep(0.5)
        await asyncio.to_thread(server.start)
        phase = "after"
        await asyncio.gather(*writers)  # any other exception type fails the test here
        elapsed = time.perf_counter() - started

        lost = 0
        for w in range(WRITERS):
            items = await store.session(f"crash-{w}").get_items()
            stored = Counter(item["b"] for item in items if item["i"] == 0)
            expected: list[dict[str, Any]] = []
            for (writer_id, b), outcome in sorted(outcomes.items()):
                if writer_id != w:
                    continue
                allowed = {"ok": {1}, "unknown": {0, 1}, "refused": {0}}[outcome]
                assert stored[b] in allowed, f"batch {w}/{b}: {outcome}, stored {stored[b]} times"
                expected += batches[w, b] * stored[b]
            assert items == expected  # whole batches, in the order they were written
            lost += sum(
                1 for (x, b), o in outcomes.items() if x == w and o == "ok" and not stored[b]
            )

    counts = Counter(outcomes.values())
    figures.add(
        "4 writers through a crash and restart",
        database_of(request),
        runs=len(outcomes),
        items=sum(len(batches[k]) for k, o in outcomes.items() if o == "ok"),
        faults=counts["refused"] + counts["unknown"],
        lost=lost,
        seconds=elapsed,
        note=", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        + f", {rode_through[0]} ok across the restart",
    )
    # The crash reached the writers: calls were refused, or rode through on their key.
    assert counts["refused"] + rode_through[0] > 0
