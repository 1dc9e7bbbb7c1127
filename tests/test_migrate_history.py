"""Revision 0003 on databases that hold data: upgrade in place from 0002, downgrade back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import SessionStore, check, current, downgrade, upgrade
from agent_session_store.migrate import head_revision

from .test_migrate_records import session_columns, snapshot

#: The revision before this one (revision 0003 is the head while it is the newest).
BEFORE = "agent_session_store_0002"
NAMES = {"sessions_table": "chat_sessions", "messages_table": "chat_messages"}
FORK_COLUMNS = {"forked_from_session_id", "forked_from_item_id"}
ARCHIVE = "chat_messages_archive"


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def record_rows(engine: AsyncEngine, store: SessionStore) -> list[tuple[Any, ...]]:
    s = store.sessions
    columns = [s.c.session_id, s.c.user_id, s.c.title, s.c.metadata, s.c.created_at]
    async with engine.connect() as conn:
        rows = await conn.execute(select(*columns).order_by(s.c.session_id))
        return [tuple(row) for row in rows]


async def test_upgrade_from_0002_keeps_items_and_records_and_downgrade_gives_them_back(
    shared_db_url: str,
) -> None:
    await upgrade(shared_db_url, BEFORE, **NAMES)
    engine = create_async_engine(shared_db_url, poolclass=NullPool)
    # At 0002 there is no keys table yet (a later revision adds it): write without keys.
    store = SessionStore(engine, idempotency_keys=False, **NAMES)
    for n in range(10):
        handle = store.session(f"s{n}", user_id=f"u{n % 3}")
        await handle.add_items([{"n": n, "i": i} for i in range(500)])
        await handle.update(title=f"Chat {n}", metadata={"n": n})
    before = await snapshot(engine, store)
    records = await record_rows(engine, store)
    assert FORK_COLUMNS.isdisjoint(await session_columns(engine, "chat_sessions"))
    assert ARCHIVE not in await tables(engine)

    await upgrade(engine, **NAMES)

    assert await current(engine, **NAMES) == head_revision()
    await check(engine, **NAMES)  # the models' schema exactly, the archive's indexes included
    assert await snapshot(engine, store) == before
    assert await record_rows(engine, store) == records
    s = store.sessions
    async with engine.connect() as conn:
        forks = (await conn.execute(select(func.count(s.c.forked_from_session_id)))).scalar()
    assert forks == 0
    # The new operations work on the upgraded tables.
    archiving = SessionStore(engine, archive=timedelta(days=1), **NAMES)
    await archiving.fork("s1", "s1-fork", upto=10)
    assert (await archiving.info("s1-fork")).forked_from is not None  # type: ignore[union-attr]
    await archiving.session("s1-fork").clear_session()
    assert await archiving.restore("s1-fork") == 10
    await archiving.session("s1-fork").clear_session()

    await downgrade(engine, BEFORE, **NAMES)

    assert await current(engine, **NAMES) == BEFORE
    assert FORK_COLUMNS.isdisjoint(await session_columns(engine, "chat_sessions"))
    assert ARCHIVE not in await tables(engine)
    assert await snapshot(engine, store) == before
    assert await record_rows(engine, store) == records
    await upgrade(engine, **NAMES)
    await check(engine, **NAMES)
    assert await snapshot(engine, store) == before
    await engine.dispose()


async def test_tables_made_by_create_tables_upgrade_to_head_and_check_clean(
    shared_db_url: str,
) -> None:
    async with SessionStore(shared_db_url, archive=True) as store:
        await store.create_tables()
        await store.session("s").add_items([{"n": 1}, {"n": 2}])
        await store.session("s").pop_item()
    await upgrade(shared_db_url)
    await check(shared_db_url)
    async with SessionStore(shared_db_url) as store:
        assert await store.restore("s") == 1
        assert await store.session("s").get_items() == [{"n": 1}, {"n": 2}]
