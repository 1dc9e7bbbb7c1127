"""A store on a host's engine, configured the ways hosts configure theirs.

For each configuration the store must do what SQLAlchemy does on that engine: results equal to a
Core query, the engine's isolation level in force for the store's statements, every statement
seen by the host's listeners and logs, errors as the host's hooks make them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool, StaticPool

from agent_session_store import SessionStore

from .conftest import SHARED_KINDS, _url_for, dialect_of, reset_database
from .host_engines import core_items

ITEMS = [{"role": "user", "content": f"m{i}"} for i in range(3)]


@pytest.fixture(params=SHARED_KINDS)
async def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    url = _url_for(request.param, tmp_path)
    if dialect_of(url) != "sqlite":
        await reset_database(url)
    return url


async def exercise(store: SessionStore, session_id: str = "s") -> None:
    """Every session operation once, each result checked against a Core query."""
    engine = store.engine
    await store.add_items(session_id, ITEMS)
    assert await core_items(engine, None, session_id) == ITEMS
    assert await store.get_items(session_id) == ITEMS
    assert await store.get_items(session_id, limit=2) == ITEMS[-2:]
    assert await store.pop_item(session_id) == ITEMS[-1]
    assert await core_items(engine, None, session_id) == ITEMS[:-1]
    await store.clear_session(session_id)
    assert await core_items(engine, None, session_id) == []
    assert await store.pop_item(session_id) is None


# -- isolation_level ---------------------------------------------------------------------

LEVEL_SQL = {
    "postgresql": [
        "CREATE TABLE IF NOT EXISTS iso_audit (level TEXT)",
        "CREATE OR REPLACE FUNCTION iso_note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO iso_audit VALUES (current_setting('transaction_isolation')); RETURN NULL; "
        "END $$",
        "CREATE TRIGGER iso_note AFTER INSERT OR DELETE ON agent_messages "
        "FOR EACH ROW EXECUTE FUNCTION iso_note()",
    ],
    "mariadb": [
        "CREATE TABLE IF NOT EXISTS iso_audit (level TEXT)",
        "CREATE TRIGGER iso_ins AFTER INSERT ON agent_messages "
        "FOR EACH ROW INSERT INTO iso_audit VALUES (@@tx_isolation)",
        "CREATE TRIGGER iso_del AFTER DELETE ON agent_messages "
        "FOR EACH ROW INSERT INTO iso_audit VALUES (@@tx_isolation)",
    ],
}


def _level(name: str) -> str:
    return name.upper().replace("-", " ").replace("_", " ")


async def _audited_levels(url: str, store: SessionStore) -> set[str]:
    """The isolation level each row change of the store's ran at, recorded by a trigger."""
    await store.create_tables()
    plain = create_async_engine(url, poolclass=NullPool)
    try:
        async with plain.begin() as conn:
            for sql in LEVEL_SQL[dialect_of(url)]:
                await conn.execute(text(sql))
        await exercise(store)
        async with plain.connect() as conn:
            return {_level(r[0]) for r in await conn.execute(text("SELECT level FROM iso_audit"))}
    finally:
        await plain.dispose()


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgresql),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])
async def server(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    url = _url_for(request.param, tmp_path)
    await reset_database(url)
    return url


async def test_writes_run_at_the_isolation_level_of_the_hosts_engine(server: str) -> None:
    engine = create_async_engine(server, isolation_level="SERIALIZABLE")
    try:
        assert await _audited_levels(server, SessionStore(engine)) == {"SERIALIZABLE"}
    finally:
        await engine.dispose()


async def test_writes_run_at_the_isolation_level_of_the_hosts_execution_options(
    server: str,
) -> None:
    engine = create_async_engine(server)
    try:
        serializable = engine.execution_options(isolation_level="SERIALIZABLE")
        assert await _audited_levels(server, SessionStore(serializable)) == {"SERIALIZABLE"}
        # The host's other connections are back at the engine's level.
        async with engine.connect() as conn:
            level = await conn.get_isolation_level()
        assert _level(level) == _level(engine.dialect.default_isolation_level or "")
    finally:
        await engine.dispose()


@pytest.mark.parametrize("level", ["SERIALIZABLE", "AUTOCOMMIT"])
async def test_operations_match_core_at_each_isolation_level(url: str, level: str) -> None:
    engine = create_async_engine(url, isolation_level=level)
    try:
        store = SessionStore(engine)
        await store.create_tables()
        await exercise(store)
        if level != "AUTOCOMMIT":  # the server reports its own level under autocommit
            async with engine.connect() as conn:
                assert _level(await conn.get_isolation_level()) == _level(level)
    finally:
        await engine.dispose()


# -- pools -------------------------------------------------------------------------------

POOLS: dict[str, dict[str, Any]] = {
    "NullPool": {"poolclass": NullPool},
    "StaticPool": {"poolclass": StaticPool},
    "AsyncAdaptedQueuePool": {"poolclass": AsyncAdaptedQueuePool, "pool_size": 2,
                              "max_overflow": 0},
}


@pytest.mark.parametrize("pool", list(POOLS))
async def test_operations_and_concurrent_writers_work_on_each_pool_class(
    url: str, pool: str
) -> None:
    engine = create_async_engine(url, **POOLS[pool])
    try:
        store = SessionStore(engine)
        await store.create_tables()
        await exercise(store)
        batches = [[{"w": w, "i": i} for i in range(3)] for w in range(10)]
        await asyncio.wait_for(
            asyncio.gather(*(store.add_items("many", batch) for batch in batches)), 60
        )
        got = await store.get_items("many")
        assert got == await core_items(engine, None, "many")
        assert sorted(json.dumps(b) for b in (got[i : i + 3] for i in range(0, 30, 3))) == sorted(
            json.dumps(b) for b in batches
        )
        if isinstance(engine.pool, AsyncAdaptedQueuePool):
            assert engine.pool.checkedout() == 0
    finally:
        await engine.dispose()


# -- asyncpg statement names ----------------------------------------------------------------


@pytest.fixture
async def named_engine(tmp_path: Any) -> AsyncIterator[tuple[AsyncEngine, list[str]]]:
    url = _url_for("postgresql", tmp_path)
    await reset_database(url)
    names: list[str] = []

    def name() -> str:
        names.append(f"__host_{len(names)}__")
        return names[-1]

    args = {
        "prepared_statement_name_func": name,
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
    }
    engine = create_async_engine(url, connect_args=args)
    yield engine, names
    await engine.dispose()


@pytest.mark.postgresql
async def test_asyncpg_statements_are_prepared_under_the_hosts_names(
    named_engine: tuple[AsyncEngine, list[str]],
) -> None:
    engine, names = named_engine
    store = SessionStore(engine)
    await store.create_tables()
    for name, call in [
        ("add_items", lambda: store.add_items("s", ITEMS)),
        ("get_items", lambda: store.get_items("s")),
        ("get_items(limit)", lambda: store.get_items("s", limit=1)),
        ("pop_item", lambda: store.pop_item("s")),
        ("clear_session", lambda: store.clear_session("s")),
    ]:
        before = len(names)
        await call()
        assert len(names) > before, f"{name} prepared no statement under the host's names"


# -- echo and logging -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["echo", "logging"])
async def test_every_statement_is_logged_with_echo_or_sql_logging(
    url: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    sql_logger = logging.getLogger("sqlalchemy.engine.Engine")
    saved = sql_logger.level, list(sql_logger.handlers)
    engine = create_async_engine(url, echo=how == "echo")
    store = SessionStore(engine)
    try:
        await store.create_tables()
        with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"):
            for call, sql in [
                (lambda: store.add_items("s", ITEMS), "INSERT INTO agent_messages"),
                (lambda: store.get_items("s"), "FROM agent_messages"),
                (lambda: store.get_items("s", limit=1), "FROM agent_messages"),
                (lambda: store.pop_item("s"), "agent_messages"),
                (lambda: store.clear_session("s"), "DELETE FROM agent_messages"),
            ]:
                caplog.clear()
                await call()
                logged = [r.getMessage() for r in caplog.records]
                assert any(sql in line for line in logged), (sql, logged)
    finally:
        await engine.dispose()
        # echo=True configures the shared logger; later tests must not inherit it.
        sql_logger.setLevel(saved[0])
        sql_logger.handlers[:] = saved[1]
