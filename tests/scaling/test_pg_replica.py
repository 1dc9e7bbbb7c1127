"""Reads on a real PostgreSQL streaming replica (``pg_basebackup -R``), with read-your-writes.

The pair is the one ``.ci/run`` starts (``AGENT_SESSION_STORE_TEST_PG_REPLICA_URLS``). Every
check compares what the store read with what it had just written, item for item.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from agent_session_store import SessionStore
from tests.scaling.conftest import report

pytestmark = pytest.mark.postgresql

SESSIONS = 20
CYCLES_PER_SESSION = 50  # 20 x 50 = 1,000 write-then-read cycles


def _item(session_id: str, n: int) -> dict[str, Any]:
    return {"role": "user", "content": f"{session_id}:{n}"}


async def _caught_up(store: SessionStore, direct: SessionStore, session_id: str) -> None:
    """Wait (bounded) until a plain replica store shows what ``store`` holds for the session."""
    wanted = await store.get_items(session_id)
    for _ in range(500):
        if await direct.get_items(session_id) == wanted:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the replica did not catch up with {session_id!r} within 5 s")


async def test_own_writes_read_through_the_replica_are_never_stale(
    pg_replica_urls: tuple[str, str],
) -> None:
    primary, replica = pg_replica_urls
    async with (
        SessionStore(primary, replica=replica) as store,
        SessionStore(replica) as direct,  # the replica read as it is, for comparison
    ):
        await store.create_tables()
        stale, direct_stale = [], 0

        async def cycles(session_id: str) -> None:
            nonlocal direct_stale
            written: list[Any] = []
            for n in range(CYCLES_PER_SESSION):
                item = _item(session_id, n)
                await store.add_items(session_id, [item])
                written.append(item)
                if await direct.get_items(session_id, limit=1) != [item]:
                    direct_stale += 1
                read = await store.get_items(session_id) if n % 2 else await store.get_items(
                    session_id, limit=3
                )
                if read != (written if n % 2 else written[-3:]):
                    stale.append((session_id, n, read[-1:] if read else read))

        await asyncio.gather(*(cycles(f"ryw-{s}") for s in range(SESSIONS)))
        stats = store.replica_stats
        assert stats is not None
        cycles_run = SESSIONS * CYCLES_PER_SESSION
        report(
            f"replica read-your-writes: {cycles_run} write-then-read cycles, "
            f"{len(stale)} stale; replica served {stats.replica} of {stats.reads} reads "
            f"({stats.replica_fraction:.0%}; {stats.waited} waited for replay), "
            f"primary: {stats.primary_behind} replica behind, {stats.primary_unavailable} "
            f"unavailable; {stats.positions} primary WAL position queries; "
            f"reading the replica directly right after the write: "
            f"{direct_stale}/{cycles_run} stale"
        )
        assert stale == []
        assert stats.reads == cycles_run
        assert stats.replica > 0


async def test_sessions_not_written_by_this_store_read_from_the_replica_at_once(
    pg_replica_urls: tuple[str, str],
) -> None:
    primary, replica = pg_replica_urls
    async with (
        SessionStore(primary) as writer,
        SessionStore(replica) as direct,
        SessionStore(primary, replica=replica) as reader,
    ):
        await writer.create_tables()
        ids = [f"other-{n}" for n in range(10)]
        for session_id in ids:
            await writer.add_items(session_id, [_item(session_id, 0), _item(session_id, 1)])
        for session_id in ids:
            await _caught_up(writer, direct, session_id)
        for session_id in ids:
            assert await reader.get_items(session_id) == [
                _item(session_id, 0),
                _item(session_id, 1),
            ]
        stats = reader.replica_stats
        assert stats is not None
        assert (stats.replica, stats.waited, stats.primary_behind) == (len(ids), 0, 0)


async def test_listing_info_and_counts_on_the_replica_show_own_writes(
    pg_replica_urls: tuple[str, str],
) -> None:
    primary, replica = pg_replica_urls
    async with SessionStore(primary, replica=replica) as store:
        await store.create_tables()
        for round_ in range(20):
            session_id = f"listed-{round_}"
            await store.add_items(session_id, [_item(session_id, n) for n in range(round_ + 1)])
            assert await store.count_items(session_id) == round_ + 1
            info = await store.session_info(session_id)
            assert info is not None and info.item_count == round_ + 1
            record = await store.info(session_id)
            assert record is not None and record.session_id == session_id
            page = await store.list_sessions(limit=100)
            assert {r.session_id for r in page.sessions} == {
                f"listed-{n}" for n in range(round_ + 1)
            }
        await store.records.update("listed-0", title="renamed")
        record = await store.info("listed-0")
        assert record is not None and record.title == "renamed"
        pruned = await store.delete_sessions(older_than=timedelta(seconds=-60))
        assert pruned.sessions == 20
        assert (await store.list_sessions()).sessions == []
        stats = store.replica_stats
        assert stats is not None and stats.reads == 20 * 4 + 2


async def test_sessions_pushed_out_of_the_write_memory_still_read_fresh(
    pg_replica_urls: tuple[str, str],
) -> None:
    primary, replica = pg_replica_urls
    async with SessionStore(primary, replica=replica, replica_max_tracked=4) as store:
        await store.create_tables()
        ids = [f"many-{n}" for n in range(60)]
        stale = 0
        for rounds in range(3):
            for session_id in ids:
                await store.add_items(session_id, [_item(session_id, rounds)])
            for session_id in ids:
                expected = [_item(session_id, n) for n in range(rounds + 1)]
                stale += await store.get_items(session_id) != expected
            assert store._replica is not None and store._replica.freshness.tracked <= 4
        assert stale == 0


async def test_pop_and_clear_are_seen_by_the_next_read(pg_replica_urls: tuple[str, str]) -> None:
    primary, replica = pg_replica_urls
    async with SessionStore(primary, replica=replica) as store:
        await store.create_tables()
        for n in range(100):
            session_id = f"pop-{n % 5}"
            await store.add_items(session_id, [_item(session_id, 0), _item(session_id, 1)])
            assert await store.pop_item(session_id) == _item(session_id, 1)
            assert await store.get_items(session_id, limit=1) == [_item(session_id, 0)]
            await store.clear_session(session_id)
            assert await store.get_items(session_id) == []


async def test_owner_bound_handles_and_long_histories_read_fresh_on_the_replica(
    pg_replica_urls: tuple[str, str],
) -> None:
    primary, replica = pg_replica_urls
    async with SessionStore(primary, replica=replica) as store:
        await store.create_tables()
        owned = store.session("owned", user_id="alice")
        for n in range(30):
            await owned.add_items([_item("owned", n)])
            assert await owned.get_items(limit=1) == [_item("owned", n)]
        # Longer than one buffered read (2,000 items): streamed through a server-side cursor.
        long = [_item("long", n) for n in range(2_500)]
        await store.add_items("long", long)
        assert await store.get_items("long") == long
        stats = store.replica_stats
        # 30 tail reads; the long one is a buffered head read, then the streamed read.
        assert stats is not None and stats.reads == 32 and stats.replica > 0


async def test_rewind_replace_and_fork_are_seen_by_the_next_replica_read(
    pg_replica_urls: tuple[str, str],
) -> None:
    primary, replica = pg_replica_urls
    async with SessionStore(primary, replica=replica) as store:
        await store.create_tables()
        for n in range(30):
            session_id = f"hist-{n}"
            await store.add_items(session_id, [_item(session_id, i) for i in range(3)])
            await store.rewind(session_id, 1)
            assert await store.get_items(session_id) == [_item(session_id, 0)]
            await store.replace_items(session_id, [_item(session_id, 9)])
            assert await store.get_items(session_id) == [_item(session_id, 9)]
            await store.fork(session_id, f"{session_id}-fork")
            assert await store.get_items(f"{session_id}-fork") == [_item(session_id, 9)]
