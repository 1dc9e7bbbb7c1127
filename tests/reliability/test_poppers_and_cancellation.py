"""Poppers racing writers return each item once; cancelled calls are all-or-nothing."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from typing import Any

import pytest

from agent_session_store import SessionStore

from .figures import Figures, database_of

WRITERS = 6
POPPERS = 6
BATCHES = 30
SESSIONS = 3
CANCELLATIONS = 300


def _key(item: dict[str, Any]) -> tuple[int, int, int]:
    return (item["w"], item["b"], item["i"])


async def test_concurrent_poppers_return_each_item_once_and_leave_the_rest_while_writers_add(
    store: SessionStore, figures: Figures, request: pytest.FixtureRequest
) -> None:
    written: list[dict[str, Any]] = []
    popped: list[dict[str, Any]] = []
    writing = True

    async def writer(w: int) -> None:
        session = store.session(f"pop-{w % SESSIONS}")
        for b in range(BATCHES):
            batch = [{"role": "user", "w": w, "b": b, "i": i} for i in range(1 + (b + w) % 3)]
            await session.add_items(batch)
            written.extend(batch)

    async def popper(p: int) -> None:
        session = store.session(f"pop-{p % SESSIONS}")
        while writing:
            item = await session.pop_item()
            if item is not None:
                popped.append(item)
            else:
                await asyncio.sleep(0.001)

    started = time.perf_counter()
    poppers = [asyncio.create_task(popper(p)) for p in range(POPPERS)]
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    writing = False
    await asyncio.gather(*poppers)
    elapsed = time.perf_counter() - started
    remaining: list[dict[str, Any]] = []
    for n in range(SESSIONS):
        remaining += await store.session(f"pop-{n}").get_items()

    popped_keys = Counter(_key(i) for i in popped)
    duplicates = [k for k, c in popped_keys.items() if c > 1]
    union = popped_keys + Counter(_key(i) for i in remaining)
    lost = sum((Counter(_key(i) for i in written) - union).values())
    figures.add(
        "concurrent poppers vs writers (6 + 6 tasks, 3 sessions)",
        database_of(request),
        runs=len(popped) + WRITERS * BATCHES,
        items=len(written),
        lost=lost + len(duplicates),
        seconds=elapsed,
    )
    assert duplicates == []
    assert union == Counter(_key(i) for i in written)
    assert len(popped) > 0


async def test_poppers_and_remaining_items_partition_what_was_written(
    store: SessionStore,
) -> None:
    session = store.session("partition")
    written = [{"n": n} for n in range(120)]
    await asyncio.gather(*(session.add_items(written[k : k + 4]) for k in range(0, 120, 4)))
    popped = await asyncio.gather(*(session.pop_item() for _ in range(50)))
    remaining = await session.get_items()

    assert None not in popped
    assert len({p["n"] for p in popped}) == 50
    assert sorted(p["n"] for p in popped + remaining) == list(range(120))


async def _latency(operation: Any, runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await operation()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def test_cancelled_add_pop_and_clear_are_all_or_nothing_and_the_session_stays_usable(
    store: SessionStore, figures: Figures, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(5)
    session = store.session("cancel")
    # Cancel anywhere from before the call starts to just after it would have finished.
    spans = {
        "add": await _latency(lambda: session.add_items([{"n": -1}, {"n": -2}])),
        "pop": await _latency(session.pop_item),
        "clear": await _latency(session.clear_session),
    }
    model: list[dict[str, Any]] = []
    interrupted = completed = items = unchanged = 0
    started = time.perf_counter()
    for run in range(CANCELLATIONS):
        op = rng.choice(["add", "add", "pop", "clear"] if model else ["add"])
        batch = [{"run": run, "i": i} for i in range(rng.randint(1, 5))]
        call = {
            "add": lambda batch=batch: session.add_items(batch),
            "pop": session.pop_item,
            "clear": session.clear_session,
        }[op]
        task = asyncio.create_task(call())
        if rng.random() > 0.1:  # else cancel before the call has taken a single step
            await asyncio.sleep(rng.uniform(0, spans[op] * 1.5))
        task.cancel()
        try:
            await task
            completed += 1
        except asyncio.CancelledError:
            interrupted += 1

        # The cancelled call has settled when it returns: what is stored now is final.
        stored = await session.get_items()
        done = {"add": model + batch, "pop": model[:-1], "clear": []}[op]
        assert stored in (model, done), f"run {run}: {op} left a partial result"
        if op == "add" and stored == done:
            items += len(batch)
        unchanged += stored == model != done
        model = stored
        checked_out = getattr(store.engine.pool, "checkedout", lambda: 0)()
        assert checked_out == 0, f"run {run}: a connection was left checked out"

    await session.add_items([{"after": "cancellations"}])
    assert await session.get_items() == [*model, {"after": "cancellations"}]
    figures.add(
        "cancellation of add/pop/clear at random points",
        database_of(request),
        runs=CANCELLATIONS,
        items=items,
        faults=interrupted,
        lost=0,
        seconds=time.perf_counter() - started,
        note=f"{unchanged} cancelled before any effect, {completed} finished before the cancel",
    )
    # Cancellations must have hit calls before they started, while running, and after the end.
    assert unchanged > 0
    assert interrupted > CANCELLATIONS // 10
    assert completed > 0
