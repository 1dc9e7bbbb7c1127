"""``SessionStore(..., replica=...)`` on every database: where it is refused, and its fallbacks.

Reads on a real streaming replica are in ``tests/scaling/test_pg_replica.py``; here the
"replica" is a server that cannot serve (down, or not a standby), and the reads must still be
right, from the primary.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from agent_session_store import SessionStore
from agent_session_store._replica import Freshness
from agent_session_store.errors import (
    ArgumentTypeError,
    DatabaseConnectionError,
    InvalidArgumentError,
)
from tests.conftest import dialect_of


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nothing"


async def test_a_replica_is_refused_where_the_store_cannot_keep_reads_fresh(db_url: str) -> None:
    if dialect_of(db_url) == "postgresql":
        async with SessionStore(db_url, replica=db_url) as store:
            assert store.replica_stats is not None
        return
    with pytest.raises(InvalidArgumentError, match="PostgreSQL streaming replicas"):
        SessionStore(db_url, replica=_closed_port_url())


async def test_without_a_replica_there_are_no_replica_stats(store: SessionStore) -> None:
    await store.add_items("s", [{"n": 1}])
    assert await store.get_items("s") == [{"n": 1}]
    assert store.replica_stats is None


@pytest.mark.postgresql
async def test_the_replica_is_given_as_the_primary_is(db_url: str) -> None:
    if dialect_of(db_url) != "postgresql":
        pytest.skip("replica= is PostgreSQL only")
    engine = create_async_engine(db_url)
    try:
        with pytest.raises(ArgumentTypeError, match="replica as a URL too"):
            SessionStore(db_url, replica=engine)
        with pytest.raises(ArgumentTypeError, match="AsyncEngine too"):
            SessionStore(engine, replica=db_url)
        with pytest.raises(InvalidArgumentError, match="PostgreSQL standby"):
            SessionStore(db_url, replica="sqlite+aiosqlite:///:memory:")
    finally:
        await engine.dispose()


async def test_reads_go_to_the_primary_when_the_replica_is_down(db_url: str) -> None:
    if dialect_of(db_url) != "postgresql":
        pytest.skip("replica= is PostgreSQL only")
    async with SessionStore(db_url, replica=_closed_port_url()) as store:
        await store.create_tables()
        await store.add_items("down", [{"n": 1}, {"n": 2}])
        assert await store.get_items("down") == [{"n": 1}, {"n": 2}]
        assert await store.get_items("never-written") == []
        assert await store.count_items("down") == 2
        stats = store.replica_stats
        assert stats is not None
        assert (stats.replica, stats.primary_unavailable) == (0, 3)


async def test_reads_go_to_the_primary_when_the_replica_is_not_a_standby(db_url: str) -> None:
    if dialect_of(db_url) != "postgresql":
        pytest.skip("replica= is PostgreSQL only")
    # The "replica" is the primary itself: pg_last_wal_replay_lsn() is NULL there, so the
    # store cannot tell whether it shows a write, and reads this store wrote go to the primary.
    async with SessionStore(db_url, replica=db_url) as store:
        await store.create_tables()
        for n in range(20):
            await store.add_items("self", [{"n": n}])
            assert (await store.get_items("self", limit=1)) == [{"n": n}]
        stats = store.replica_stats
        assert stats is not None
        assert (stats.replica, stats.primary_unavailable) == (0, 20)


def test_freshness_remembers_a_bounded_number_of_sessions_and_owes_the_forgotten_ones() -> None:
    fresh = Freshness(max_tracked=3)
    for n in range(10):
        fresh.wrote(f"s{n}")
    assert fresh.tracked == 3
    assert fresh.owed("s9") == 10
    assert fresh.owed("s0") == 7  # forgotten: owes the newest write it might have been
    assert fresh.owed(None) == 10  # a listing owes every write
    fresh.observe(10, 12345)
    assert fresh.observation(10) == (10, 12345)
    fresh.replayed(10)
    assert [fresh.owed(s) for s in ("s9", "s0", None)] == [0, 0, 0]
    assert fresh.tracked == 2  # s9 is visible: no longer remembered
    fresh.wrote(None)  # a write over many sessions (prune, import)
    assert fresh.owed("s1") == 11


async def test_a_multi_host_url_without_a_primary_fails_once_the_retry_deadline_passes(
    db_url: str,
) -> None:
    if dialect_of(db_url) != "postgresql":
        pytest.skip("multi-host URLs are a PostgreSQL (asyncpg) feature")
    ports = [_closed_port_url().rsplit(":", 1)[1].split("/")[0] for _ in range(2)]
    hosts = "&".join(f"host=127.0.0.1:{port}" for port in ports)
    url = f"postgresql+asyncpg://postgres@/nothing?{hosts}&target_session_attrs=read-write"
    async with SessionStore(url, retry_deadline=0.5) as store:
        with pytest.raises(DatabaseConnectionError, match="cannot connect"):
            await asyncio.wait_for(store.add_items("s", [{"n": 1}]), timeout=30)
        with pytest.raises(DatabaseConnectionError, match="cannot connect"):
            await asyncio.wait_for(store.get_items("s"), timeout=30)
