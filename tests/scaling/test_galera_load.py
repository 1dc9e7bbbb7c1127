"""A MariaDB Galera Cluster under multi-writer load, and with a node killed mid-run.

Writers and poppers on all three nodes work on the same sessions, so transactions of
different nodes certify against each other and the losers get error 1213: the store retries
them within its retry deadline, and callers see no error. Then a node is killed with
``kill -9`` mid-run: callers connected to it move to the next host of their URL; a write
whose COMMIT was in flight raises ``CommitOutcomeUnknownError`` (it may or may not have been
applied), never a silent second copy. The node rejoins before the test ends.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

from agent_session_store import SessionStore
from tests.scaling.conftest import REQUIRE_ENV, report
from tests.scaling.galera_load import SESSIONS, Tally, judge, pop, write

WRITERS_PER_NODE = 4
BATCHES = 25
POPPERS_PER_NODE = 1
POPS = 20
GALERA_DIR_ENV = "AGENT_SESSION_STORE_TEST_GALERA_DIR"
GALERA_SH = Path(__file__).resolve().parents[2] / ".ci" / "galera.sh"


def several_hosts(urls: list[str], first: int) -> str:
    """One URL naming every node, node ``first`` first (each store prefers its own node)."""
    order = urls[first:] + urls[:first]
    hosts = [f"{make_url(u).host}:{make_url(u).port}" for u in order]
    real = make_url(urls[0])
    base = URL.create(real.drivername, real.username, real.password, database=real.database)
    base = base.update_query_dict(dict(real.query))
    return base.update_query_dict({"host": hosts}).render_as_string(hide_password=False)


@pytest.fixture
async def node_stores(galera_urls: list[str]) -> AsyncIterator[list[SessionStore]]:
    stores = [SessionStore(url) for url in galera_urls]
    await stores[0].create_tables()
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()


async def _histories(store: SessionStore) -> dict[str, list[dict[str, object]]]:
    return {sid: await store.get_items(sid) for sid in SESSIONS}


async def test_writers_and_poppers_on_every_node_lose_nothing_and_surface_no_error(
    node_stores: list[SessionStore],
) -> None:
    tally = Tally()
    work = [
        write(store, node, task, BATCHES, tally)
        for node, store in enumerate(node_stores)
        for task in range(WRITERS_PER_NODE)
    ] + [
        pop(store, node, POPS, tally)
        for node, store in enumerate(node_stores)
        for _ in range(POPPERS_PER_NODE)
    ]
    await asyncio.wait_for(asyncio.gather(*work), timeout=300)
    every_node = [await _histories(store) for store in node_stores]
    outcome = judge(every_node[0], tally)
    retries = [store.retry_stats for store in node_stores]
    report(
        f"galera multi-writer: {len(tally.acknowledged)} batches written, "
        f"{outcome.lost} items lost, {outcome.duplicated} duplicated, {outcome.split} batches "
        f"split; {tally.pops} pops ({len(tally.popped)} items, {outcome.popped_twice} popped "
        f"twice); {len(tally.errors)} errors surfaced; retries "
        f"{sum(r.retries for r in retries)} over {sum(r.calls_retried for r in retries)} calls "
        f"(by kind {[r.by_kind for r in retries]}), most attempts of one call "
        f"{max(r.most_attempts for r in retries)}, longest wait of one call "
        f"{max(r.longest_wait_s for r in retries):.3f} s, slowest call "
        f"{tally.slowest_call_s:.3f} s"
    )
    assert tally.errors == []
    assert len(tally.acknowledged) == len(node_stores) * WRITERS_PER_NODE * BATCHES
    assert (outcome.lost, outcome.duplicated, outcome.split, outcome.popped_twice) == (0, 0, 0, 0)
    assert every_node[1] == every_node[0] and every_node[2] == every_node[0]  # one order


def _galera_dir() -> str:
    found = os.environ.get(GALERA_DIR_ENV)
    if not found:
        message = f"{GALERA_DIR_ENV} is not set; the node-kill test needs the cluster's DIR"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(reason=message)
    return found


async def _galera(action: str, directory: str, node: int) -> None:
    process = await asyncio.create_subprocess_exec(
        "bash", str(GALERA_SH), action, directory, str(node),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    if process.returncode != 0:
        raise AssertionError(f"galera.sh {action} {node} failed: {out.decode()[-2000:]}")


async def test_a_node_killed_mid_run_loses_no_acknowledged_batch(
    galera_urls: list[str],
) -> None:
    directory = _galera_dir()
    victim = len(galera_urls)  # node 3; its store's URL lists it first
    stores = [SessionStore(several_hosts(galera_urls, i)) for i in range(len(galera_urls))]
    tally = Tally()
    try:
        await stores[0].create_tables()

        async def kill_when_under_way() -> None:
            while len(tally.acknowledged) < WRITERS_PER_NODE * BATCHES // 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await _galera("kill", directory, victim)

        work = [
            write(store, node, task, BATCHES, tally)
            for node, store in enumerate(stores)
            for task in range(WRITERS_PER_NODE)
        ]
        await asyncio.wait_for(asyncio.gather(kill_when_under_way(), *work), timeout=300)
        outcome = judge(await _histories(stores[0]), tally)
        retries = [store.retry_stats for store in stores]
    finally:
        try:
            await _galera("rejoin", directory, victim)
        finally:
            for store in stores:
                await store.close()
    async with SessionStore(galera_urls[0]) as first, SessionStore(galera_urls[-1]) as rejoined:
        same_on_rejoined = await _histories(rejoined) == await _histories(first)
    report(
        f"galera node {victim} killed (kill -9) mid-run: {len(tally.acknowledged)} batches "
        f"acknowledged, {len(tally.unknown)} CommitOutcomeUnknownError "
        f"({outcome.unknown_stored} of them stored), {len(tally.errors)} other errors "
        f"{tally.errors[:3]}; {outcome.lost} items lost, {outcome.duplicated} duplicated, "
        f"{outcome.split} batches split; retries {sum(r.retries for r in retries)} over "
        f"{sum(r.calls_retried for r in retries)} calls, {sum(r.gave_up for r in retries)} "
        f"gave up; slowest call {tally.slowest_call_s:.2f} s; "
        f"node rejoined with the same histories: {same_on_rejoined}"
    )
    assert tally.errors == []  # connection errors moved to another host, or were unknowns
    assert (outcome.lost, outcome.duplicated, outcome.split) == (0, 0, 0)
    assert same_on_rejoined
