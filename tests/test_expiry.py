"""Expiry through every handle: pops and updates slide the ttl, plain handles see it too,
and concurrent writers to an expired session restart it once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import update

from agent_session_store import SessionStore

HOUR = timedelta(hours=1)


async def expire(store: SessionStore, session_id: str) -> None:
    s = store.sessions
    past = datetime.now(timezone.utc) - timedelta(seconds=10)
    async with store.engine.begin() as conn:
        await conn.execute(update(s).where(s.c.session_id == session_id).values(expires_at=past))


async def set_expiry(store: SessionStore, session_id: str, when: datetime) -> None:
    s = store.sessions
    async with store.engine.begin() as conn:
        await conn.execute(update(s).where(s.c.session_id == session_id).values(expires_at=when))


async def expires_at(store: SessionStore, session_id: str) -> datetime | None:
    record = await store.info(session_id)
    assert record is not None
    return record.expires_at


@pytest.mark.parametrize("user_id", [None, "u-1"])
async def test_pop_item_and_update_slide_the_ttl_like_add_items(
    db_url: str, user_id: str | None
) -> None:
    async with SessionStore(db_url, ttl=HOUR) as store:
        await store.create_tables()
        session = store.session("chat", user_id=user_id)
        await session.add_items([{"n": 1}, {"n": 2}])
        soon = datetime.now(timezone.utc) + timedelta(minutes=5)
        await set_expiry(store, "chat", soon)  # as if the last write was 55 minutes ago

        assert await session.pop_item() == {"n": 2}
        after_pop = await expires_at(store, "chat")
        assert after_pop is not None and after_pop > soon + timedelta(minutes=50)

        await set_expiry(store, "chat", soon)
        await session.update(title="renamed")
        after_update = await expires_at(store, "chat")
        assert after_update is not None and after_update > soon + timedelta(minutes=50)

        fixed = datetime(2030, 1, 1, tzinfo=timezone.utc)
        await session.update(expires_at=fixed)  # a time given wins over the ttl
        assert await expires_at(store, "chat") == fixed

        await set_expiry(store, "chat", soon)
        await session.clear_session()
        assert await session.pop_item() is None  # nothing popped: nothing written, no row made
        assert await store.info("chat") is None


@pytest.mark.parametrize("kind", ["plain store", "store ttl, handle ttl=None", "owned"])
async def test_an_expired_session_reads_as_empty_through_every_handle(
    db_url: str, kind: str
) -> None:
    ttl = HOUR if kind == "store ttl, handle ttl=None" else None
    async with SessionStore(db_url, ttl=ttl) as store:
        await store.create_tables()
        kwargs: dict[str, Any] = {"user_id": "u-1"} if kind == "owned" else {}
        if ttl is not None:
            kwargs["ttl"] = None  # this handle never sets an expiry, yet sees one
        session = store.session("chat", **kwargs)
        await session.add_items([{"n": 1}, {"n": 2}])
        await session.update(title="old", metadata={"k": 1})
        await expire(store, "chat")

        assert await session.get_items() == []
        assert await session.get_items(limit=1) == []
        assert await session.pop_item() is None
        assert await session.info() is None
        assert await store.get_items("chat") == []
        assert await store.pop_item("chat") is None
        assert await store.count_items("chat") == 2  # still stored until purged or written

        # The first write starts it afresh: no old item, title or metadata; not expired.
        await session.add_items([{"n": 3}])
        assert await session.get_items() == [{"n": 3}]
        assert await store.get_items("chat") == [{"n": 3}]
        info = await session.info()
        assert info is not None and info.title is None and info.metadata == {}
        assert info.item_count == 1


async def test_update_on_an_expired_session_starts_it_afresh(db_url: str) -> None:
    async with SessionStore(db_url) as store:
        await store.create_tables()
        session = store.session("chat")
        await session.add_items([{"n": 1}])
        await session.update(title="old", metadata={"a": 1})
        await expire(store, "chat")
        await session.update(metadata={"b": 2})
        info = await session.info()
        assert info is not None and info.title is None and info.metadata == {"b": 2}
        assert info.item_count == 0 and info.expires_at is None
        assert await session.get_items() == []


@pytest.mark.parametrize("ttl", [None, HOUR])
@pytest.mark.parametrize("user_id", [None, "u-1"])
async def test_concurrent_writers_to_an_expired_session_restart_it_once_losing_nothing_new(
    shared_db_url: str, ttl: timedelta | None, user_id: str | None
) -> None:
    writers, batches = 8, 5
    async with SessionStore(shared_db_url, ttl=ttl) as store:
        await store.create_tables()
        session = store.session("chat", user_id=user_id)
        for rnd in range(3):  # three lives, each expired and restarted by a crowd
            await session.add_items([{"old": rnd, "i": i} for i in range(10)])
            await session.update(title=f"life {rnd}", metadata={"life": rnd})
            await expire(store, "chat")

            async def write(w: int, rnd: int = rnd) -> None:
                handle = store.session("chat", user_id=user_id)
                for b in range(batches):
                    await handle.add_items([{"w": w, "b": b, "rnd": rnd}, {"w": w, "b": b}])
                    if b == 0:  # a restart after this would wipe the key: it must not come
                        await handle.update(metadata={f"w{w}": rnd})

            await asyncio.gather(*(write(w) for w in range(writers)))
            items = await session.get_items()
            assert not [item for item in items if "old" in item]  # nothing of the old life
            assert len(items) == writers * batches * 2  # every new write kept
            for w in range(writers):  # each writer's batches whole and in its order
                mine = [item["b"] for item in items if item.get("w") == w and "rnd" in item]
                assert mine == list(range(batches))
            info = await session.info()
            # One restart: the old title and metadata gone, every new key kept.
            assert info is not None and info.title is None
            assert info.metadata == {f"w{w}": rnd for w in range(writers)}
            assert info.item_count == writers * batches * 2
            await session.clear_session()


@pytest.mark.parametrize("kind", ["plain", "owned", "ttl", "archive"])
async def test_keyed_adds_and_replace_on_an_expired_session_start_it_afresh(
    db_url: str, kind: str
) -> None:
    # The merge of expiry with idempotency keys and history: a keyed append restarts an
    # expired session and records its key (a repeat stores nothing); replace_items too.
    async with SessionStore(db_url, archive=kind == "archive") as store:
        await store.create_tables()
        kwargs: dict[str, Any] = {"user_id": "u-1"} if kind == "owned" else {}
        if kind == "ttl":
            kwargs["ttl"] = HOUR
        session = store.session("chat", **kwargs)
        await session.add_items([{"n": 1}, {"n": 2}], idempotency_key="k-1")
        await session.update(title="old", metadata={"k": 1})
        await expire(store, "chat")

        await session.add_items([{"n": 3}], idempotency_key="k-2")
        await session.add_items([{"n": 3}], idempotency_key="k-2")  # a retry: stored once
        assert await session.get_items() == [{"n": 3}]
        info = await session.info()
        assert info is not None and info.title is None and info.metadata == {}
        assert info.item_count == 1

        await session.update(title="second life")
        await expire(store, "chat")
        await session.replace_items([{"n": 4}, {"n": 5}])
        assert await session.get_items() == [{"n": 4}, {"n": 5}]
        info = await session.info()
        assert info is not None and info.title is None and info.item_count == 2
        if kind == "ttl":
            assert info.expires_at is not None and info.expires_at > datetime.now(timezone.utc)
        else:
            assert info.expires_at is None
