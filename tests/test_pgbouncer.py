"""PostgreSQL behind PgBouncer in transaction pooling mode, set up as SQLAlchemy documents.

SQLAlchemy's asyncpg docs for PgBouncer: ``NullPool`` (PgBouncer pools), asyncpg's statement
cache off (``statement_cache_size=0``), SQLAlchemy's prepared-statement cache off
(``prepared_statement_cache_size=0``) and a unique name per prepared statement
(``prepared_statement_name_func``), since consecutive transactions of one client may run on
different server connections. ``.ci/run`` starts PgBouncer (``.ci/pgbouncer.sh``) and sets
``AGENT_SESSION_STORE_TEST_PGBOUNCER_URL``; without it these tests skip locally and fail in CI.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import SessionStore

from .conftest import REQUIRE_ENV, reset_database, server_url

PGBOUNCER_ENV = "AGENT_SESSION_STORE_TEST_PGBOUNCER_URL"
pytestmark = pytest.mark.postgresql


def pgbouncer_kwargs(names: list[str]) -> dict[str, Any]:
    """``create_async_engine`` arguments for PgBouncer; each statement name is kept in ``names``."""

    def unique_name() -> str:
        name = f"__asyncpg_{uuid4()}__"
        names.append(name)
        return name

    return {
        "poolclass": NullPool,
        "connect_args": {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": unique_name,
        },
    }


@pytest.fixture
def pgbouncer_url() -> str:
    url = os.environ.get(PGBOUNCER_ENV)
    if not url:
        message = f"{PGBOUNCER_ENV} is not set; start PgBouncer with .ci/pgbouncer.sh (see .ci/run)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(reason=message)
    return url


@pytest.fixture
async def names() -> list[str]:
    return []


@pytest.fixture
async def bounced(pgbouncer_url: str, names: list[str]) -> AsyncIterator[AsyncEngine]:
    """A host's engine through PgBouncer, on the (emptied) PostgreSQL test database."""
    direct = server_url("postgresql")
    assert make_url(direct).database == make_url(pgbouncer_url).database
    await reset_database(direct)
    engine = create_async_engine(pgbouncer_url, **pgbouncer_kwargs(names))
    yield engine
    await engine.dispose()


def msg(i: int) -> dict[str, Any]:
    return {"role": "user", "content": f"message {i}"}


async def test_session_operations_work_through_pgbouncer(
    bounced: AsyncEngine, names: list[str]
) -> None:
    store = SessionStore(bounced)
    await store.create_tables()
    session = store.session("bounced")
    await session.add_items([msg(0), msg(1)])
    await session.add_items([msg(2)])
    assert await session.get_items() == [msg(0), msg(1), msg(2)]
    assert await session.get_items(limit=2) == [msg(1), msg(2)]
    assert await session.pop_item() == msg(2)
    await session.clear_session()
    assert await session.get_items() == []
    assert await session.pop_item() is None


async def test_every_operation_prepares_under_the_hosts_statement_names(
    bounced: AsyncEngine, names: list[str]
) -> None:
    """``prepared_statement_name_func`` is consulted for the store's statements, as for Core's."""
    store = SessionStore(bounced)
    await store.create_tables()
    session = store.session("named")
    operations: dict[str, Any] = {
        "add_items": lambda: session.add_items([msg(0), msg(1)]),
        "get_items": lambda: session.get_items(),
        "get_items(limit)": lambda: session.get_items(limit=1),
        "pop_item": lambda: session.pop_item(),
        "clear_session": lambda: session.clear_session(),
    }
    for name, call in operations.items():
        before = len(names)
        await call()
        assert len(names) > before, f"{name} prepared no statement under the host's names"


async def test_concurrent_writers_through_pgbouncer_each_keep_their_batches_whole(
    bounced: AsyncEngine,
) -> None:
    """More clients than PgBouncer has server connections: they share them, transaction-wise."""
    store = SessionStore(bounced)
    await store.create_tables()
    writers, batches, size = 8, 4, 3
    counter = itertools.count()

    async def writer(w: int) -> None:
        session = store.session(f"w{w % 2}")
        for b in range(batches):
            n = next(counter)
            await session.add_items([{"w": w, "b": b, "n": n, "i": i} for i in range(size)])

    await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(writers))), 120)
    items = await store.get_items("w0") + await store.get_items("w1")
    assert len(items) == writers * batches * size
    # Each batch is contiguous and in order inside its session.
    for sid in ("w0", "w1"):
        got = await store.get_items(sid)
        for start in range(0, len(got), size):
            batch = got[start : start + size]
            assert [item["i"] for item in batch] == list(range(size))
            assert len({(item["w"], item["b"]) for item in batch}) == 1


async def test_concurrent_poppers_through_pgbouncer_get_each_item_once(
    bounced: AsyncEngine,
) -> None:
    store = SessionStore(bounced)
    await store.create_tables()
    await store.add_items("pops", [msg(i) for i in range(20)])
    popped = await asyncio.wait_for(
        asyncio.gather(*(store.pop_item("pops") for _ in range(25))), 120
    )
    got = [item for item in popped if item is not None]
    assert sorted(item["content"] for item in got) == sorted(msg(i)["content"] for i in range(20))
    assert await store.get_items("pops") == []


async def test_a_store_that_makes_its_engine_works_through_pgbouncer(pgbouncer_url: str) -> None:
    await reset_database(server_url("postgresql"))
    names: list[str] = []
    async with SessionStore(pgbouncer_url, engine_kwargs=pgbouncer_kwargs(names)) as store:
        await store.create_tables()
        await asyncio.gather(*(store.add_items(f"s{i}", [msg(i)]) for i in range(6)))
        assert [await store.get_items(f"s{i}") for i in range(6)] == [[msg(i)] for i in range(6)]
        assert await store.pop_item("s0") == msg(0)
        await store.clear_session("s1")
        assert await store.count_items("s1") == 0
    assert names
