"""Many writer processes appending batches to a few shared sessions: nothing lost or mixed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from agent_session_store import SessionStore

from .figures import Figures, database_of
from .workers import (
    BATCHES_PER_TASK,
    SESSIONS,
    TASKS_PER_PROCESS,
    batch_items,
    run_processes,
    session_for,
    write_batches,
)

PROCESSES = 8


def check_history(session_id: str, items: list[dict[str, Any]]) -> list[str]:
    """Problems in one session's history: missing, extra, duplicated, split or reordered."""
    problems: list[str] = []
    expected = [
        item
        for proc in range(PROCESSES)
        for task in range(TASKS_PER_PROCESS)
        if session_for(proc, task) == session_id
        for batch in range(BATCHES_PER_TASK)
        for item in batch_items(proc, task, batch)
    ]
    key = lambda item: (tuple(item["w"]), item["b"], item["i"])  # noqa: E731
    seen = Counter(key(item) for item in items)
    wanted = Counter(key(item) for item in expected)
    if seen != wanted:
        problems.append(
            f"{session_id}: {sum((wanted - seen).values())} missing, "
            f"{sum((seen - wanted).values())} extra or duplicated"
        )
    last_batch: dict[tuple[int, ...], int] = {}
    position = 0
    while position < len(items):
        first = items[position]
        writer, batch = tuple(first["w"]), first["b"]
        size = len(batch_items(0, 0, batch))
        block = items[position : position + size]
        if [(tuple(i["w"]), i["b"], i["i"]) for i in block] != [
            (writer, batch, i) for i in range(size)
        ]:
            problems.append(f"{session_id}: batch {writer} #{batch} is split or out of order")
            position += 1
            continue
        if last_batch.get(writer, -1) >= batch:
            problems.append(f"{session_id}: writer {writer} batch #{batch} came after a later one")
        last_batch[writer] = batch
        position += size
    return problems


@pytest.mark.slow
async def test_eight_processes_of_twenty_writers_keep_every_batch_once_contiguous_and_in_order(
    shared_db_url: str, figures: Figures, request: pytest.FixtureRequest
) -> None:
    async with SessionStore(shared_db_url) as store:
        await store.create_tables()
    started = time.perf_counter()
    errors = await asyncio.to_thread(run_processes, shared_db_url, PROCESSES, write_batches)
    elapsed = time.perf_counter() - started
    assert errors == []

    problems: list[str] = []
    total = 0
    async with SessionStore(shared_db_url) as store:
        for n in range(SESSIONS):
            items = await store.session(f"shared-{n}").get_items()
            total += len(items)
            problems += check_history(f"shared-{n}", items)
    expected_total = (
        PROCESSES
        * TASKS_PER_PROCESS
        * sum(len(batch_items(0, 0, b)) for b in range(BATCHES_PER_TASK))
    )
    figures.add(
        "many writers: 8 processes x 20 tasks x 25 batches, 10 sessions",
        database_of(request),
        runs=PROCESSES * TASKS_PER_PROCESS * BATCHES_PER_TASK,
        items=expected_total,
        lost=max(expected_total - total, 0) + len(problems),
        seconds=elapsed,
    )
    assert problems == []
    assert total == expected_total
