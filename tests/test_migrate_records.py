"""Revision 0002 on databases that hold data: upgrade in place from 0001, downgrade back."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import SessionStore, check, current, downgrade, upgrade
from agent_session_store.migrate import head_revision

FIRST = "agent_session_store_0001"
NAMES = {"sessions_table": "chat_sessions", "messages_table": "chat_messages"}
RECORD_COLUMNS = {"user_id", "title", "metadata", "expires_at"}


async def snapshot(engine: AsyncEngine, store: SessionStore) -> list[tuple[Any, ...]]:
    m = store.messages
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(m.c.id, m.c.session_id, m.c.message_data, m.c.created_at).order_by(m.c.id)
        )
        return [tuple(row) for row in rows]


async def session_columns(engine: AsyncEngine, name: str) -> set[str]:
    async with engine.connect() as conn:
        columns = await conn.run_sync(lambda c: inspect(c).get_columns(name))
    return {column["name"] for column in columns}


async def test_upgrade_from_0001_keeps_10000_items_and_downgrade_gives_them_back(
    shared_db_url: str,
) -> None:
    await upgrade(shared_db_url, FIRST, **NAMES)
    engine = create_async_engine(shared_db_url, poolclass=NullPool)
    store = SessionStore(engine, **NAMES)
    # Written as 0001 knew them (this package's operations need 0002's expires_at).
    s, m = store.sessions, store.messages
    async with engine.begin() as conn:
        await conn.execute(s.insert(), [{"session_id": f"s{n}"} for n in range(10)])
        rows = [
            {"session_id": f"s{n}", "message_data": json.dumps({"n": n, "i": i})}
            for n in range(10)
            for i in range(1_000)
        ]
        await conn.execute(m.insert(), rows)
    before = await snapshot(engine, store)
    assert len(before) == 10_000
    assert RECORD_COLUMNS.isdisjoint(await session_columns(engine, "chat_sessions"))

    await upgrade(engine, **NAMES)

    assert await current(engine, **NAMES) == head_revision()
    await check(engine, **NAMES)  # the models' schema exactly, indexes included
    assert await snapshot(engine, store) == before
    async with engine.connect() as conn:
        found = (
            await conn.execute(
                select(func.count(), func.count(s.c.user_id), func.count(s.c.expires_at))
            )
        ).one()
    assert tuple(found) == (10, 0, 0)  # every session kept, none owned, none expiring
    assert await store.session("s3").get_items(limit=2) == [{"n": 3, "i": 998}, {"n": 3, "i": 999}]

    await downgrade(engine, FIRST, **NAMES)

    assert await current(engine, **NAMES) == FIRST
    assert RECORD_COLUMNS.isdisjoint(await session_columns(engine, "chat_sessions"))
    assert await snapshot(engine, store) == before
    await upgrade(engine, **NAMES)
    await check(engine, **NAMES)
    assert await snapshot(engine, store) == before
    await engine.dispose()


async def test_tables_made_by_create_tables_upgrade_to_head_keeping_owners(
    shared_db_url: str,
) -> None:
    async with SessionStore(shared_db_url) as store:
        await store.create_tables()
        await store.session("s").add_items([{"n": 1}])
        async with store.engine.begin() as conn:
            await conn.execute(store.sessions.update().values(user_id="u-1", title="kept"))
    await upgrade(shared_db_url)
    await check(shared_db_url)
    async with SessionStore(shared_db_url) as store:
        s = store.sessions
        async with store.engine.connect() as conn:
            row = (await conn.execute(select(s.c.user_id, s.c.title))).one()
        assert tuple(row) == ("u-1", "kept")
        assert await store.session("s").get_items() == [{"n": 1}]
