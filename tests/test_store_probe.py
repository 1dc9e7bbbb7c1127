"""The probe: the driver path only for engines it reproduces exactly, else Core with one warning.

Tenants by ``schema_translate_map`` stay in their own schema on every operation (the driver
path compiles the map into its SQL); settings the driver path does not reproduce send the
store to Core, say why once, and change no result.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Any

import pytest
from sqlalchemy import event, make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateSchema, DropSchema

from agent_session_store import SessionStore
from agent_session_store._probe import Path

LOGGER = "agent_session_store"


def _path(store: SessionStore) -> Path:
    return store._transport.probe.path()


def _fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER
        and r.levelno == logging.WARNING
        and "SQLAlchemy Core" in r.getMessage()
    ]


async def _exercise(store: SessionStore, session_id: str) -> None:
    await store.add_items(session_id, [{"n": 1}, {"n": 2}, {"n": 3}])
    assert await store.get_items(session_id) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert await store.get_items(session_id, limit=2) == [{"n": 2}, {"n": 3}]
    assert await store.pop_item(session_id) == {"n": 3}
    assert await store.count_items(session_id) == 2
    await store.clear_session(session_id)
    assert await store.get_items(session_id) == []
    assert await store.pop_item(session_id) is None


# -- schema_translate_map: one schema per tenant -------------------------------------------


@asynccontextmanager
async def _tenant_schemas(
    db_url: str, tmp_path: FilePath
) -> AsyncIterator[tuple[AsyncEngine, list[str]]]:
    """An engine on ``db_url`` with two tenant schemas.

    Databases on MariaDB, attached files on SQLite; named after the test database so parallel
    runs do not collide.
    """
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        names = ["tenant_a", "tenant_b"]
        engine = create_async_engine(db_url)
        memory = url.database in (None, "", ":memory:")

        def attach(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            for name in names:
                where = ":memory:" if memory else str(tmp_path / f"{name}.db")
                cursor.execute(f"ATTACH DATABASE '{where}' AS {name}")
            cursor.close()

        event.listen(engine.sync_engine, "connect", attach)
        try:
            yield engine, names
        finally:
            await engine.dispose()
        return
    names = [f"{url.database}_tenant_a", f"{url.database}_tenant_b"]
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            for name in names:
                await _drop_schema(conn, name)
                await conn.execute(CreateSchema(name))
        yield engine, names
    finally:
        async with engine.begin() as conn:
            for name in names:
                await _drop_schema(conn, name)
        await engine.dispose()


async def _drop_schema(conn: AsyncConnection, name: str) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(DropSchema(name, cascade=True, if_exists=True))
    else:
        await conn.execute(DropSchema(name, if_exists=True))


async def test_schema_translate_map_keeps_every_operation_of_a_tenant_in_its_own_schema(
    db_url: str, tmp_path: FilePath, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with _tenant_schemas(db_url, tmp_path) as (engine, (schema_a, schema_b)):
        plain = SessionStore(engine)
        tenant_a = SessionStore(engine.execution_options(schema_translate_map={None: schema_a}))
        tenant_b = SessionStore(engine.execution_options(schema_translate_map={None: schema_b}))
        for store in (plain, tenant_a, tenant_b):
            await store.create_tables()
        # The map is compiled into the driver path's SQL: tenants keep the fast path.
        assert _path(tenant_a) is Path.DRIVER

        await tenant_a.add_items("user-1", [{"tenant": "a", "n": 1}, {"tenant": "a", "n": 2}])
        await tenant_b.add_items("user-1", [{"tenant": "b", "n": 1}])

        both = [{"tenant": "a", "n": 1}, {"tenant": "a", "n": 2}]
        assert await tenant_a.get_items("user-1") == both
        assert await tenant_a.get_items("user-1", limit=1) == [{"tenant": "a", "n": 2}]
        assert await tenant_b.get_items("user-1") == [{"tenant": "b", "n": 1}]
        assert await plain.get_items("user-1") == [], "a tenant's items landed in the shared tables"
        assert await tenant_a.count_items("user-1") == 2
        assert await tenant_b.count_items("user-1") == 1
        assert await plain.count_items("user-1") == 0
        page = await tenant_a.list_sessions()
        assert [(s.session_id, s.item_count) for s in page.sessions] == [("user-1", 2)]
        assert (await plain.list_sessions()).sessions == []

        # The rows are where the map says, seen without the store.
        async with engine.connect() as conn:
            table = f"{schema_a}.agent_messages"
            count = (await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one()
            assert count == 2

        assert await tenant_a.pop_item("user-1") == {"tenant": "a", "n": 2}
        assert await tenant_b.get_items("user-1") == [{"tenant": "b", "n": 1}]
        records = [r async for r in tenant_a.export_sessions()]
        result = await tenant_b.import_sessions(records, replace=True)
        assert result.replaced == 1
        assert await tenant_b.get_items("user-1") == [{"tenant": "a", "n": 1}]
        await tenant_a.clear_session("user-1")
        assert await tenant_a.get_items("user-1") == []
        assert await tenant_b.get_items("user-1") == [{"tenant": "a", "n": 1}]
        assert await plain.session_info("user-1") is None
    assert _fallback_warnings(caplog) == []


# -- settings the driver path does not reproduce send the store to Core -----------------------


def _isolated(db_url: str) -> AsyncEngine:
    return create_async_engine(db_url, isolation_level="SERIALIZABLE")


def _with_logging_token(db_url: str) -> AsyncEngine:
    return create_async_engine(db_url).execution_options(logging_token="tenant-7")


def _with_do_execute(db_url: str) -> AsyncEngine:
    engine = create_async_engine(db_url)

    def do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> None:
        return None  # observe only: SQLAlchemy then executes as usual

    event.listen(engine.sync_engine, "do_execute", do_execute)
    return engine


@pytest.mark.parametrize(
    ("make_engine", "reason"),
    [
        (_isolated, "isolation_level='SERIALIZABLE'"),
        (_with_logging_token, "execution options the driver path does not reproduce: "
         "['logging_token']"),
        (_with_do_execute, "listeners for ['do_execute']"),
    ],
    ids=["isolation_level", "unknown_execution_option", "do_execute_listener"],
)
async def test_a_setting_the_driver_path_does_not_reproduce_sends_the_store_to_core_warning_once(
    db_url: str, make_engine: Any, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    engine = make_engine(db_url)
    try:
        store = SessionStore(engine)
        assert _path(store) is Path.CORE
        await store.create_tables()
        await _exercise(store, "first")
        await _exercise(store, "second")
        warnings = _fallback_warnings(caplog)
        assert len(warnings) == 1, warnings
        assert reason in warnings[0]
    finally:
        await engine.dispose()


async def test_a_plain_engine_takes_the_driver_path_without_a_warning(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with SessionStore(db_url) as store:
        assert _path(store) is Path.DRIVER
        await store.create_tables()
        await _exercise(store, "plain")
    assert _fallback_warnings(caplog) == []


@pytest.mark.postgresql
async def test_asyncpg_prepared_statement_name_func_sends_the_store_to_core_after_one_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.conftest import reset_database, server_url

    url = server_url("postgresql")
    await reset_database(url)
    caplog.set_level(logging.WARNING, logger=LOGGER)

    def name() -> str:
        return f"__a1_{uuid.uuid4()}__"

    engine = create_async_engine(url, connect_args={"prepared_statement_name_func": name})
    try:
        store = SessionStore(engine)
        await store.create_tables()
        await _exercise(store, "pgbouncer-style")
        assert _path(store) is Path.CORE
        warnings = _fallback_warnings(caplog)
        assert len(warnings) == 1 and "prepared_statement_name_func" in warnings[0], warnings
    finally:
        await engine.dispose()


async def test_a_sqlalchemy_whose_internals_differ_sends_the_store_to_core_warning_once(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A SQLAlchemy release without ``Pool._invalidate`` (which the driver path calls after a
    # disconnect): ``_internals.self_check`` itself finds it missing on a fresh engine, the
    # store keeps to Core (which calls it only on a disconnect) and says why once.
    from sqlalchemy.pool import Pool

    monkeypatch.delattr(Pool, "_invalidate")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    engine = create_async_engine(db_url)
    try:
        store = SessionStore(engine)
        assert _path(store) is Path.CORE
        await store.create_tables()
        await _exercise(store, "first")
        await _exercise(store, "second")
        warnings = _fallback_warnings(caplog)
        assert len(warnings) == 1, warnings
        assert "internals differ" in warnings[0] and "Pool._invalidate is missing" in warnings[0]
    finally:
        await engine.dispose()
