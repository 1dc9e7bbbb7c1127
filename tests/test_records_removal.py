"""Expiry purges and user erasure: bounded batches, exact counts, nothing left behind."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, or_, select

from agent_session_store import Removed, SessionStore
from agent_session_store.records import SessionRecords

PAST = datetime(2026, 1, 1, tzinfo=timezone.utc)
FUTURE = datetime.now(timezone.utc) + timedelta(days=30)


def records_of(store: SessionStore) -> SessionRecords:
    return store.records


async def seed(store: SessionStore, expired: int, live: int, items: int = 2) -> None:
    """``expired`` sessions past their expiry and ``live`` ones, ``items`` items each."""
    s, m = store.sessions, store.messages
    rows = [
        {"session_id": f"x{i:04d}", "user_id": f"u{i % 3}", "expires_at": PAST}
        for i in range(expired)
    ] + [
        {"session_id": f"l{i:04d}", "user_id": f"u{i % 3}", "expires_at": FUTURE if i % 2 else None}
        for i in range(live)
    ]
    messages = [
        {"session_id": row["session_id"], "message_data": json.dumps({"n": n})}
        for row in rows
        for n in range(items)
    ]
    async with store.engine.begin() as conn:
        await conn.execute(s.insert(), rows)
        await conn.execute(m.insert(), messages)


async def counts(store: SessionStore) -> tuple[int, int]:
    s, m = store.sessions, store.messages
    async with store.engine.connect() as conn:
        sessions = (await conn.execute(select(func.count()).select_from(s))).scalar_one()
        items = (await conn.execute(select(func.count()).select_from(m))).scalar_one()
    return sessions, items


async def test_purge_expired_deletes_expired_sessions_and_items_in_batches(
    store: SessionStore,
) -> None:
    await seed(store, expired=23, live=10)
    records = records_of(store)
    assert await records.purge_expired(dry_run=True) == Removed(23, 46)
    assert await counts(store) == (33, 66)
    assert await records.purge_expired(batch_size=5) == Removed(23, 46)
    assert await counts(store) == (10, 20)
    s = store.sessions
    async with store.engine.connect() as conn:
        left = set((await conn.execute(select(s.c.session_id))).scalars())
    assert left == {f"l{i:04d}" for i in range(10)}
    assert await records.purge_expired() == Removed(0, 0)  # resumable: nothing left to do


PURGER = textwrap.dedent(
    """
    import asyncio, json, sys
    from agent_session_store import SessionStore
    from agent_session_store.records import SessionRecords

    async def main():
        async with SessionStore(sys.argv[1]) as store:
            records = SessionRecords(store.engine, store.sessions, store.messages)
            removed = await records.purge_expired(batch_size=7)
            print(json.dumps([removed.sessions, removed.items]))

    asyncio.run(main())
    """
)


async def test_purge_expired_from_several_processes_deletes_each_session_once(
    shared_db_url: str,
) -> None:
    async with SessionStore(shared_db_url) as store:
        await store.create_tables()
        await seed(store, expired=300, live=20)

    async def purge() -> list[int]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PURGER,
            shared_db_url,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, err.decode()
        result: list[int] = json.loads(out)
        return result

    results = await asyncio.gather(*(purge() for _ in range(3)))
    assert sum(r[0] for r in results) == 300  # each expired session counted by one process
    assert sum(r[1] for r in results) == 600
    async with SessionStore(shared_db_url) as store:
        assert await counts(store) == (20, 40)  # none missed, no live session touched


async def test_erase_user_leaves_nothing_of_that_user_in_any_table(store: SessionStore) -> None:
    await seed(store, expired=5, live=40, items=3)
    records = records_of(store)
    for i in range(4):
        await records.update(f"extra{i}", "u1", title="Erase me", metadata={"email": "u1@x"})
        await store.session(f"extra{i}").add_items([{"content": "private"}])
        await store.session(f"extra{i}").record_usage({"input_tokens": 9, "output_tokens": 1})
    await store.record_usage("l0001", {"input_tokens": 5, "output_tokens": 5})  # u1's session
    await store.record_usage("gone", {"input_tokens": 1, "output_tokens": 1}, user_id="u1")
    await store.record_usage("l0000", {"input_tokens": 2, "output_tokens": 2})  # u0's: kept
    s, m, u = store.sessions, store.messages, store.usage_table
    async with store.engine.connect() as conn:
        theirs = set(
            (await conn.execute(select(s.c.session_id).where(s.c.user_id == "u1"))).scalars()
        )
    assert len(theirs) == 19  # 2 expired + 13 live + 4 extra
    assert await records.erase_user("u1", dry_run=True) == Removed(19, 2 * 3 + 13 * 3 + 4, 6)
    assert await records.erase_user("u1", batch_size=4) == Removed(19, 2 * 3 + 13 * 3 + 4, 6)

    async with store.engine.connect() as conn:
        owned = await conn.execute(select(func.count()).select_from(s).where(s.c.user_id == "u1"))
        assert owned.scalar_one() == 0
        orphans = (
            select(func.count())
            .select_from(m)
            .where(or_(m.c.session_id.in_(theirs), m.c.message_data.contains("private")))
        )
        assert (await conn.execute(orphans)).scalar_one() == 0
        marked = (
            select(func.count())
            .select_from(s)
            .where(or_(s.c.session_id.in_(theirs), s.c.title == "Erase me"))
        )
        assert (await conn.execute(marked)).scalar_one() == 0
        billed = (
            select(func.count())
            .select_from(u)
            .where(or_(u.c.user_id == "u1", u.c.session_id.in_([*theirs, "gone"])))
        )
        assert (await conn.execute(billed)).scalar_one() == 0
        assert (await conn.execute(select(u.c.session_id))).scalars().all() == ["l0000"]
    assert await counts(store) == (45 + 4 - 19, (45 - 15) * 3)  # the other users untouched
    assert await records.erase_user("u1") == Removed(0, 0)
