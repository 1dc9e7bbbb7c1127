"""The usage ledger's revision on databases that hold data: upgrade in place, downgrade back."""

from __future__ import annotations

from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import SessionStore, check, current, downgrade, upgrade
from agent_session_store.migrate import _script_location, head_revision

USAGE_REVISION = "agent_session_store_0004"
NAMES = {"sessions_table": "chat_sessions", "messages_table": "chat_messages"}
USAGE_TABLE = "chat_sessions_usage"


def revision_before_usage() -> str:
    down = ScriptDirectory(_script_location()).get_revision(USAGE_REVISION).down_revision
    assert isinstance(down, str)
    return down


async def snapshot(engine: AsyncEngine, store: SessionStore) -> list[tuple[Any, ...]]:
    s, m = store.sessions, store.messages
    joined = s.join(m, m.c.session_id == s.c.session_id)
    stmt = select(m.c.id, s.c.session_id, s.c.user_id, m.c.message_data, m.c.created_at)
    async with engine.connect() as conn:
        rows = await conn.execute(stmt.select_from(joined).order_by(m.c.id))
        return [tuple(row) for row in rows]


async def tables_and_indexes(engine: AsyncEngine) -> tuple[set[str], set[str]]:
    def look(conn: Any) -> tuple[set[str], set[str]]:
        inspector = inspect(conn)
        names = set(inspector.get_table_names())
        indexes = set()
        if USAGE_TABLE in names:
            indexes = {str(ix["name"]) for ix in inspector.get_indexes(USAGE_TABLE)}
        return names, indexes

    async with engine.connect() as conn:
        return await conn.run_sync(look)


async def test_usage_revision_upgrades_in_place_and_downgrades_keeping_every_item(
    shared_db_url: str,
) -> None:
    before_usage = revision_before_usage()
    await upgrade(shared_db_url, before_usage, **NAMES)
    engine = create_async_engine(shared_db_url, poolclass=NullPool)
    store = SessionStore(engine, idempotency_keys=False, **NAMES)  # keys come after 0004
    for n in range(5):
        handle = store.session(f"s{n}", user_id=f"u{n % 2}")
        await handle.add_items([{"n": n, "i": i} for i in range(200)])
    before = await snapshot(engine, store)
    assert len(before) == 1_000
    assert USAGE_TABLE not in (await tables_and_indexes(engine))[0]

    await upgrade(engine, **NAMES)

    assert await current(engine, **NAMES) == head_revision()
    await check(engine, **NAMES)  # the models' schema exactly, the usage indexes included
    names, indexes = await tables_and_indexes(engine)
    assert USAGE_TABLE in names
    assert {f"ix_{USAGE_TABLE}_{suffix}" for suffix in ("created", "user_created",
                                                        "session_created")} <= indexes
    assert await snapshot(engine, store) == before
    await store.session("s1", user_id="u1").record_usage(
        {"input_tokens": 10, "output_tokens": 2}, model="m"
    )
    (totals,) = await store.usage(user_id="u1")
    assert (totals.runs, totals.total_tokens) == (1, 12)

    await downgrade(engine, before_usage, **NAMES)

    assert await current(engine, **NAMES) == before_usage
    assert USAGE_TABLE not in (await tables_and_indexes(engine))[0]
    assert await snapshot(engine, store) == before
    await upgrade(engine, **NAMES)
    await check(engine, **NAMES)
    assert await snapshot(engine, store) == before
    assert await store.usage() == [type(totals)()]  # the ledger starts empty again
    await engine.dispose()


async def test_tables_made_by_create_tables_with_the_ledger_upgrade_to_head(
    shared_db_url: str,
) -> None:
    async with SessionStore(shared_db_url) as store:
        await store.create_tables()  # all three tables, no version row
        await store.session("s").record_usage({"input_tokens": 3, "output_tokens": 4})
    await upgrade(shared_db_url)
    await check(shared_db_url)
    async with SessionStore(shared_db_url) as store:
        assert (await store.usage())[0].total_tokens == 7  # the row was kept


async def test_a_store_checking_its_schema_works_after_upgrading_from_the_previous_revision(
    shared_db_url: str,
) -> None:
    # The keys table comes with a later revision: write as a store without generated keys.
    async with SessionStore(shared_db_url, idempotency_keys=False) as store:
        await upgrade(store.engine, revision_before_usage())
        await store.session("s", user_id="u").add_items([{"n": 1}])
    await upgrade(shared_db_url)
    await check(shared_db_url)
    async with SessionStore(shared_db_url, check_schema=True) as store:
        assert await store.session("s", user_id="u").get_items() == [{"n": 1}]
        await store.session("s", user_id="u").record_usage({"input_tokens": 1, "output_tokens": 1})
        assert (await store.usage(user_id="u"))[0].runs == 1
