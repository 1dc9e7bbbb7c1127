"""Connections killed by the server mid-operation: no partial batch, no duplicate, no restart."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from agent_session_store import CommitOutcomeUnknownError, SessionStore

from ..conftest import ALL_KINDS
from .faults import ConnectionKiller
from .figures import Figures, database_of

SERVERS = [p for p in ALL_KINDS if p.values[0] in ("postgresql", "mariadb")]
pytestmark = pytest.mark.parametrize("db_url", SERVERS, indirect=True)

#: The statement of each write that the "killed before commit" tests interrupt.
LAST_STATEMENT = {
    "add": ("INSERT INTO agent_messages", "WITH touched AS"),  # PostgreSQL: one statement
    "pop": "DELETE FROM agent_messages",
    "clear": "DELETE FROM agent_sessions",
}


@pytest.fixture
async def killable(db_url: str) -> AsyncIterator[tuple[SessionStore, ConnectionKiller]]:
    async with SessionStore(db_url) as store:
        killer = ConnectionKiller(store, db_url)  # before the first connection is made
        await store.create_tables()
        try:
            yield store, killer
        finally:
            await killer.close()


async def _call(store: SessionStore, op: str) -> Any:
    session = store.session("victim")
    if op == "add":
        return await session.add_items([{"n": 3}, {"n": 4}])
    if op == "pop":
        return await session.pop_item()
    if op == "get":
        return await session.get_items()
    return await session.clear_session()


EXPECTED = {
    "add": [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}],
    "pop": [{"n": 1}],
    "get": [{"n": 1}, {"n": 2}],
    "clear": [],
}


@pytest.mark.parametrize("op", ["add", "pop", "get", "clear"])
async def test_a_connection_killed_while_idle_in_the_pool_does_not_fail_the_next_call(
    killable: tuple[SessionStore, ConnectionKiller], op: str
) -> None:
    store, killer = killable
    await store.session("victim").add_items([{"n": 1}, {"n": 2}])
    assert await killer.kill_all() >= 1

    await _call(store, op)

    assert await store.session("victim").get_items() == EXPECTED[op]


@pytest.mark.parametrize("op", ["add", "pop", "clear"])
async def test_a_connection_killed_before_commit_is_retried_and_applies_the_call_once(
    killable: tuple[SessionStore, ConnectionKiller], op: str
) -> None:
    store, killer = killable
    await store.session("victim").add_items([{"n": 1}, {"n": 2}])
    killer.kill_inside("before_cursor_execute", lambda sql: sql.startswith(LAST_STATEMENT[op]))

    result = await _call(store, op)

    assert killer.kills == 1
    killer.disarm()
    assert await store.session("victim").get_items() == EXPECTED[op]
    if op == "pop":
        assert result == {"n": 2}


async def test_a_connection_killed_during_commit_of_add_items_is_settled_by_its_key_and_stores_once(
    killable: tuple[SessionStore, ConnectionKiller],
) -> None:
    store, killer = killable
    await store.session("victim").add_items([{"n": 1}, {"n": 2}])
    killer.kill_inside("commit")  # pg_terminate_backend / KILL just before COMMIT is sent

    await _call(store, "add")  # sent again with the same idempotency key: no error

    killer.disarm()
    assert killer.kills == 1
    assert await store.session("victim").get_items() == EXPECTED["add"]


@pytest.mark.parametrize("op", ["pop", "clear"])
async def test_a_connection_killed_during_commit_raises_a_clear_error_and_is_not_retried(
    killable: tuple[SessionStore, ConnectionKiller], op: str
) -> None:
    store, killer = killable
    await store.session("victim").add_items([{"n": 1}, {"n": 2}])
    before = await store.session("victim").get_items()
    killer.kill_inside("commit")

    with pytest.raises(CommitOutcomeUnknownError, match="may or may not have been saved"):
        await _call(store, op)

    killer.disarm()
    assert killer.kills == 1
    # COMMIT never reached the server, which rolled back: one retry would have applied it.
    assert await store.session("victim").get_items() == before
    await _call(store, op)
    assert await store.session("victim").get_items() == EXPECTED[op]


WRITERS = 8
MIN_BATCHES = 40
MIN_KILLS = 100


async def test_random_kills_under_concurrent_writers_lose_duplicate_and_split_nothing(
    killable: tuple[SessionStore, ConnectionKiller],
    figures: Figures,
    request: pytest.FixtureRequest,
) -> None:
    store, killer = killable
    rng = random.Random(7)
    outcomes: dict[tuple[int, int], str] = {}
    batches: dict[tuple[int, int], list[dict[str, int]]] = {}
    done = False

    async def writer(w: int) -> None:
        session = store.session(f"kill-{w % 3}")
        b = 0
        # Write until enough kills have landed, however fast this machine is.
        while b < MIN_BATCHES or (killer.kills < MIN_KILLS and b < 20 * MIN_BATCHES):
            batch = [{"w": w, "b": b, "i": i} for i in range(1 + b % 5)]
            batches[w, b] = batch
            try:
                await session.add_items(batch)
                outcomes[w, b] = "ok"
            except CommitOutcomeUnknownError:
                outcomes[w, b] = "unknown"
            except DBAPIError:
                outcomes[w, b] = "failed"
            b += 1

    async def kill_randomly() -> None:
        while not done:
            await asyncio.sleep(rng.uniform(0.001, 0.005))
            if killer.ids:
                await killer.kill(rng.choice(sorted(killer.ids)), wait=False)

    started = time.perf_counter()
    chaos = asyncio.create_task(kill_randomly())
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    done = True
    await chaos
    elapsed = time.perf_counter() - started

    stored: list[dict[str, int]] = []
    for n in range(3):
        items = await store.session(f"kill-{n}").get_items()
        stored += items
        position = 0
        while position < len(items):  # each stored batch is whole and contiguous
            w, b = items[position]["w"], items[position]["b"]
            assert items[position : position + len(batches[w, b])] == batches[w, b]
            position += len(batches[w, b])
    copies = Counter((item["w"], item["b"]) for item in stored if item["i"] == 0)
    for key, outcome in outcomes.items():
        allowed = {"ok": {1}, "unknown": {0, 1}, "failed": {0}}[outcome]
        assert copies[key] in allowed, f"batch {key}: {outcome} but stored {copies[key]} times"
    counts = Counter(outcomes.values())
    figures.add(
        "connections killed at random under 8 writers",
        database_of(request),
        runs=len(outcomes),
        items=sum(len(batches[k]) for k, o in outcomes.items() if o == "ok"),
        faults=killer.kills,
        lost=0,
        seconds=elapsed,
        note=", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())),
    )
    assert killer.kills >= MIN_KILLS
    # A kill at the commit point is settled by the batch's idempotency key, never "unknown".
    assert counts["unknown"] == 0, counts
    # The store recovers without a restart.
    await store.session("kill-0").add_items([{"after": True}])
    assert (await store.session("kill-0").get_items())[-1] == {"after": True}
