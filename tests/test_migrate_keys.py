"""The idempotency keys revision on databases that hold data: upgrade in place, downgrade back."""

from __future__ import annotations

from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import SessionStore, check, current, downgrade, upgrade
from agent_session_store.migrate import _script_location, head_revision

#: The revision that adds the keys table (its predecessor is read from the scripts).
KEYS_REVISION = "agent_session_store_0005"
NAMES = {"sessions_table": "chat_sessions", "messages_table": "chat_messages"}
KEYS_TABLE = "chat_messages_keys"


def revision_before_keys() -> str:
    down = ScriptDirectory(_script_location()).get_revision(KEYS_REVISION).down_revision
    assert isinstance(down, str)
    return down


async def snapshot(engine: AsyncEngine, store: SessionStore) -> list[tuple[Any, ...]]:
    m = store.messages
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(m.c.id, m.c.session_id, m.c.message_data, m.c.created_at).order_by(m.c.id)
        )
        return [tuple(row) for row in rows]


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def key_count(engine: AsyncEngine, store: SessionStore) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(store.keys))).scalar())


async def test_upgrade_adds_the_keys_table_keeping_every_item_and_downgrade_removes_it(
    shared_db_url: str,
) -> None:
    before_keys = revision_before_keys()
    await upgrade(shared_db_url, before_keys, **NAMES)
    engine = create_async_engine(shared_db_url, poolclass=NullPool)
    old_store = SessionStore(engine, idempotency_keys=False, **NAMES)  # no keys table yet
    for n in range(10):
        await old_store.session(f"s{n}").add_items([{"n": n, "i": i} for i in range(500)])
    before = await snapshot(engine, old_store)
    assert KEYS_TABLE not in await tables(engine)

    await upgrade(engine, **NAMES)

    assert await current(engine, **NAMES) == head_revision()
    await check(engine, **NAMES)  # the keys table, its keys and index exactly as the models
    store = SessionStore(engine, **NAMES)
    assert await snapshot(engine, store) == before
    assert await key_count(engine, store) == 0  # old batches have no key, and need none
    await store.session("s3").add_items([{"new": 1}], idempotency_key="k")
    await store.session("s3").add_items([{"new": 1}], idempotency_key="k")
    assert await store.session("s3").get_items(limit=2) == [{"n": 3, "i": 499}, {"new": 1}]
    after = await snapshot(engine, store)

    await downgrade(engine, before_keys, **NAMES)

    assert await current(engine, **NAMES) == before_keys
    assert KEYS_TABLE not in await tables(engine)
    assert await snapshot(engine, old_store) == after  # the items all stay
    await upgrade(engine, **NAMES)
    await check(engine, **NAMES)
    assert await snapshot(engine, store) == after
    await engine.dispose()


async def test_tables_made_by_create_tables_upgrade_to_head_keeping_their_keys(
    shared_db_url: str,
) -> None:
    async with SessionStore(shared_db_url, **NAMES) as store:
        await store.create_tables()
        await store.session("s").add_items([{"n": 1}], idempotency_key="kept")
    await upgrade(shared_db_url, **NAMES)
    await check(shared_db_url, **NAMES)
    async with SessionStore(shared_db_url, **NAMES) as store:
        await store.session("s").add_items([{"n": 1}], idempotency_key="kept")
        assert await store.session("s").get_items() == [{"n": 1}]
