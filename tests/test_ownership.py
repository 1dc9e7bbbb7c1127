"""Owners enforced on every operation, in the statement that does the work; expiry on reads."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select, update

from agent_session_store import SessionOwnershipError, SessionStore, SQLAlchemySession
from agent_session_store._scoped import Scope, ScopedStatements
from agent_session_store._statements import prepare


async def snapshot(store: SessionStore) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    s, m = store.sessions, store.messages
    async with store.engine.connect() as conn:
        sessions = [tuple(r) for r in await conn.execute(select(s).order_by(s.c.session_id))]
        messages = [tuple(r) for r in await conn.execute(select(m).order_by(m.c.id))]
    return sessions, messages


async def test_first_write_creates_the_session_owned_by_the_handles_user(
    store: SessionStore,
) -> None:
    mine = store.session("chat", user_id="u-42")
    await mine.add_items([{"n": 1}, {"n": 2}])
    info = await mine.info()
    assert info is not None and info.user_id == "u-42" and info.item_count == 2
    assert await mine.get_items() == [{"n": 1}, {"n": 2}]
    assert await mine.get_items(limit=1) == [{"n": 2}]
    assert await mine.pop_item() == {"n": 2}
    await mine.clear_session()
    assert await mine.get_items() == []
    assert await store.info("chat") is None


OPERATIONS = {
    "get_items": lambda h: h.get_items(),
    "get_items_limit": lambda h: h.get_items(limit=3),
    "add_items": lambda h: h.add_items([{"role": "user", "content": "theirs"}]),
    "pop_item": lambda h: h.pop_item(),
    "clear_session": lambda h: h.clear_session(),
    "info": lambda h: h.info(),
    "update": lambda h: h.update(title="theirs", metadata={"k": 1}),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_every_operation_by_another_user_is_refused_and_changes_nothing(
    store: SessionStore, operation: str
) -> None:
    await store.session("chat", user_id="u-1").add_items([{"n": i} for i in range(4)])
    await store.session("unowned").add_items([{"n": 9}])  # created without user_id
    before = await snapshot(store)
    for session_id in ("chat", "unowned"):
        intruder = store.session(session_id, user_id="u-2")
        with pytest.raises(SessionOwnershipError, match="nothing was read or changed"):
            await OPERATIONS[operation](intruder)
    assert await snapshot(store) == before
    # The owner and handles without user_id keep working as before.
    assert await store.session("chat", user_id="u-1").get_items(limit=1) == [{"n": 3}]
    assert await store.session("chat").get_items(limit=1) == [{"n": 3}]


async def test_sdk_style_constructor_takes_user_id_too(store: SessionStore) -> None:
    mine = SQLAlchemySession("chat", store=store, user_id="u-1")
    await mine.add_items([{"n": 1}])
    with pytest.raises(SessionOwnershipError):
        await SQLAlchemySession("chat", store=store, user_id="u-2").get_items()


async def test_two_users_racing_to_create_one_id_leave_one_owner_and_only_their_items(
    shared_db_url: str,
) -> None:
    async with SessionStore(shared_db_url) as store:
        await store.create_tables()

        async def write(user: str) -> bool:
            try:
                for i in range(5):
                    await store.session("race", user_id=user).add_items([{"by": user, "i": i}])
                return True
            except SessionOwnershipError:
                return False

        results = await asyncio.gather(*(write(f"u{n}") for n in range(6)))
        info = await store.info("race")
        assert info is not None and info.user_id is not None
        winner = info.user_id
        items = await store.session("race").get_items()
        assert {item["by"] for item in items} == {winner}
        assert results.count(True) == 1 and results[int(winner[1:])] is True


async def test_scoped_statements_run_on_the_driver_path_on_every_dialect(
    store: SessionStore,
) -> None:
    dialect = store.engine.dialect
    for owned in (False, True):
        for ttl in (False, True):
            built = ScopedStatements(
                store.sessions, store.messages, dialect,
                lambda core, **kw: prepare(core, dialect, **kw),
                owned=owned, ttl=ttl,
            )  # fmt: skip
            statements = [built.tail, built.all, built.state, built.state_locked, built.slide]
            statements += [built.delete_messages, built.delete_session, built.reset, built.pop]
            statements += [built.append] if built.append is not None else []
            statements += [built.touch] if built.touch is not None else []
            assert all(st.sql is not None for st in statements)
    assert store._statements.all_runnable_on_driver()  # the plain ones, expiry in them too


async def test_sliding_ttl_moves_expiry_at_each_write_and_expired_reads_as_empty(
    db_url: str,
) -> None:
    async with SessionStore(db_url, ttl=timedelta(hours=1)) as store:
        await store.create_tables()
        session = store.session("chat", user_id="u-1")
        await session.add_items([{"n": 1}])
        first = await session.info()
        assert first is not None and first.expires_at is not None
        left = first.expires_at - datetime.now(timezone.utc)
        assert timedelta(minutes=59) < left <= timedelta(hours=1, seconds=5)
        await session.add_items([{"n": 2}])
        second = await session.info()
        assert second is not None and second.expires_at is not None
        assert second.expires_at >= first.expires_at

        await expire(store, "chat")
        assert await session.get_items() == []
        assert await session.pop_item() is None
        assert await session.info() is None
        assert await store.get_items("chat") == []  # the store's own reads too
        assert [r.session_id for r in (await store.list_sessions()).sessions] == []
        # A write after expiry starts the conversation afresh; the old items are gone.
        await session.add_items([{"n": 3}])
        assert await session.get_items() == [{"n": 3}]
        assert await store.session("chat").get_items() == [{"n": 3}]


async def test_per_handle_ttl_overrides_the_store_and_none_turns_it_off(db_url: str) -> None:
    async with SessionStore(db_url, ttl=3600) as store:
        await store.create_tables()
        await store.session("short", ttl=timedelta(seconds=30)).add_items([{"n": 1}])
        await store.session("forever", ttl=None).add_items([{"n": 1}])
        short, forever = await store.info("short"), await store.info("forever")
        assert short is not None and short.expires_at is not None
        assert short.expires_at - datetime.now(timezone.utc) <= timedelta(seconds=35)
        assert forever is not None and forever.expires_at is None
    async with SessionStore(db_url) as plain:  # no ttl: a handle's own ttl still slides
        await plain.create_tables()
        await plain.session("p", ttl=60).add_items([{"n": 1}])
        info = await plain.info("p")
        assert info is not None and info.expires_at is not None
        assert (await plain.purge_expired()).sessions == 0  # not expired yet


async def test_a_scope_without_owner_or_ttl_uses_the_plain_statements() -> None:
    assert Scope().plain and not Scope(user_id="u").plain and not Scope(ttl=60).plain


async def expire(store: SessionStore, session_id: str) -> None:
    s = store.sessions
    past = datetime.now(timezone.utc) - timedelta(seconds=10)
    async with store.engine.begin() as conn:
        await conn.execute(update(s).where(s.c.session_id == session_id).values(expires_at=past))
