"""Schema per tenant: a store on ``engine.execution_options(schema_translate_map=...)``.

A host runs one store per tenant on one engine, each translated to the tenant's schema
(PostgreSQL schemas, MariaDB databases, SQLite attached files). Every operation, admin ones
included, must read and write only that tenant's tables, exactly where a Core query with the
same map puts them; a tenant without tables must fail as Core fails, writing nothing elsewhere.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from agent_session_store import SessionStore

from .host_engines import (
    DEFAULT_SCHEMA,
    core_count,
    core_error,
    core_items,
    core_session_ids,
    create_tables_in,
    for_tenant,
    host_engine_fixture,  # noqa: F401 - the host_engine fixture
    same_error,
    table_names,
    tenant_names,
)

ITEMS_A = [{"role": "user", "content": f"a{i}"} for i in range(4)]
ITEMS_B = [{"role": "user", "content": f"b{i}"} for i in range(3)]


async def _two_tenants(engine: AsyncEngine) -> tuple[str, str, SessionStore, SessionStore]:
    """Tables in the default schema and both tenants; one store per tenant."""
    a, b = tenant_names(str(engine.url))
    for schema in (DEFAULT_SCHEMA, a, b):
        await create_tables_in(engine, schema)
    return a, b, SessionStore(for_tenant(engine, a)), SessionStore(for_tenant(engine, b))


async def test_create_tables_creates_them_in_the_tenant_schema_only(
    host_engine: AsyncEngine,
) -> None:
    a, b = tenant_names(str(host_engine.url))
    store = SessionStore(for_tenant(host_engine, a))
    await store.create_tables()
    expected = {store.sessions_table, store.messages_table}
    assert expected <= await table_names(host_engine, a)
    assert not expected & await table_names(host_engine, b)
    assert not expected & await table_names(host_engine, DEFAULT_SCHEMA)


async def test_each_tenant_store_writes_and_reads_only_its_own_schema(
    host_engine: AsyncEngine,
) -> None:
    a, b, store_a, store_b = await _two_tenants(host_engine)
    await store_a.add_items("s", ITEMS_A)
    await store_b.add_items("s", ITEMS_B)
    assert await core_items(host_engine, a, "s") == ITEMS_A
    assert await core_items(host_engine, b, "s") == ITEMS_B
    assert await core_count(host_engine, DEFAULT_SCHEMA) == 0
    assert await store_a.get_items("s") == await core_items(host_engine, a, "s")
    assert await store_b.get_items("s", limit=2) == ITEMS_B[-2:]

    assert await store_a.pop_item("s") == ITEMS_A[-1]
    assert await core_items(host_engine, a, "s") == ITEMS_A[:-1]
    assert await core_items(host_engine, b, "s") == ITEMS_B

    await store_b.clear_session("s")
    assert await core_session_ids(host_engine, b) == set()
    assert await core_items(host_engine, a, "s") == ITEMS_A[:-1]
    assert await core_count(host_engine, DEFAULT_SCHEMA) == 0


async def test_sessions_made_from_a_tenant_store_stay_in_its_schema(
    host_engine: AsyncEngine,
) -> None:
    a, b, store_a, _ = await _two_tenants(host_engine)
    session = store_a.session("chat")
    await session.add_items(ITEMS_A[:2])
    await session.add_items(ITEMS_A[2:])
    assert await session.get_items() == await core_items(host_engine, a, "chat") == ITEMS_A
    assert await session.pop_item() == ITEMS_A[-1]
    assert await core_session_ids(host_engine, b) == set()
    assert await core_count(host_engine, DEFAULT_SCHEMA) == 0


async def test_admin_operations_see_only_the_tenant_schema(host_engine: AsyncEngine) -> None:
    a, b, store_a, store_b = await _two_tenants(host_engine)
    await store_a.add_items("only-a", ITEMS_A)
    await store_b.add_items("only-b", ITEMS_B)

    page = await store_a.list_sessions()
    assert [info.session_id for info in page.sessions] == ["only-a"]
    assert await store_a.count_items("only-a") == len(ITEMS_A)
    assert await store_a.count_items("only-b") == 0
    info = await store_a.session_info("only-a")
    assert info is not None and info.item_count == len(ITEMS_A)
    assert await store_a.session_info("only-b") is None

    records = [record async for record in store_a.export_sessions()]
    assert [r["session"] for r in records if "session" in r] == ["only-a"]

    later = datetime.now(timezone.utc) + timedelta(days=1)
    dry = await store_a.delete_sessions(older_than=later, dry_run=True)
    assert (dry.sessions, dry.items) == (1, len(ITEMS_A))
    pruned = await store_a.delete_sessions(older_than=later)
    assert (pruned.sessions, pruned.items) == (1, len(ITEMS_A))
    assert await core_session_ids(host_engine, a) == set()
    assert await core_items(host_engine, b, "only-b") == ITEMS_B
    assert await core_count(host_engine, DEFAULT_SCHEMA) == 0


async def test_import_lands_in_the_tenant_schema(host_engine: AsyncEngine) -> None:
    a, b, store_a, store_b = await _two_tenants(host_engine)
    await store_b.add_items("moved", ITEMS_B)
    records: list[Any] = [record async for record in store_b.export_sessions()]
    await store_a.import_sessions(records)
    assert await core_items(host_engine, a, "moved") == ITEMS_B
    assert await core_items(host_engine, b, "moved") == ITEMS_B
    assert await core_count(host_engine, DEFAULT_SCHEMA) == 0


async def test_a_tenant_without_tables_fails_as_core_fails_and_writes_nowhere(
    host_engine: AsyncEngine,
) -> None:
    """The tables exist in the default schema only: the tenant's store must not fall back there."""
    a, _ = tenant_names(str(host_engine.url))
    await create_tables_in(host_engine, DEFAULT_SCHEMA)
    core = await core_error(host_engine, a)
    store = SessionStore(for_tenant(host_engine, a))
    operations: dict[str, Any] = {
        "add_items": lambda: store.add_items("s", ITEMS_A),
        "get_items": lambda: store.get_items("s"),
        "get_items(limit)": lambda: store.get_items("s", limit=2),
        "pop_item": lambda: store.pop_item("s"),
        "clear_session": lambda: store.clear_session("s"),
        "count_items": lambda: store.count_items("s"),
        "session_info": lambda: store.session_info("s"),
        "list_sessions": lambda: store.list_sessions(),
    }
    for name, call in operations.items():
        try:
            await call()
        except Exception as exc:
            assert same_error(exc, core), f"{name}: {exc!r}, Core raised {core!r}"
        else:
            raise AssertionError(f"{name} succeeded on a tenant schema without tables")
    assert await core_count(host_engine, DEFAULT_SCHEMA) == 0
    assert await core_session_ids(host_engine, DEFAULT_SCHEMA) == set()
