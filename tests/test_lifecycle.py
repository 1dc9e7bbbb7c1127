"""Shutdown is final: after ``close()`` nothing runs and nothing is written.

A closed store must not quietly reopen its pool: every operation of the store and of its
sessions, ``add_items([])`` included, raises ``StoreClosedError`` (a ``RuntimeError``), and a
separate engine sees that nothing changed. ``close()`` may be called any number of times.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import SessionStore, SQLAlchemySession, errors

from .host_engines import tables

ITEM = {"role": "user", "content": "hello"}


def closed_error() -> type[Exception]:
    """``errors.StoreClosedError``; a missing class fails the test, not the collection."""
    cls = getattr(errors, "StoreClosedError", None)
    assert cls is not None, "agent_session_store.errors has no StoreClosedError"
    assert issubclass(cls, errors.AgentSessionStoreError) and issubclass(cls, RuntimeError)
    return cls  # type: ignore[no-any-return]


async def _drain(iterator: Any) -> None:
    async for _ in iterator:
        pass


def operations(store: SessionStore) -> dict[str, Callable[[], Any]]:
    """Every operation of a store and of a session made from it."""
    session = store.session("s")
    return {
        "store.add_items": lambda: store.add_items("s", [ITEM]),
        "store.add_items([])": lambda: store.add_items("s", []),
        "store.get_items": lambda: store.get_items("s"),
        "store.get_items(limit)": lambda: store.get_items("s", limit=1),
        "store.pop_item": lambda: store.pop_item("s"),
        "store.clear_session": lambda: store.clear_session("s"),
        "store.create_tables": lambda: store.create_tables(),
        "store.list_sessions": lambda: store.list_sessions(),
        "store.count_items": lambda: store.count_items("s"),
        "store.session_info": lambda: store.session_info("s"),
        "store.delete_sessions": lambda: store.delete_sessions(older_than=timedelta(0)),
        "store.export_sessions": lambda: _drain(store.export_sessions()),
        "store.import_sessions": lambda: store.import_sessions([{"session": "new"}]),
        "session.add_items": lambda: session.add_items([ITEM]),
        "session.add_items([])": lambda: session.add_items([]),
        "session.get_items": lambda: session.get_items(),
        "session.pop_item": lambda: session.pop_item(),
        "session.clear_session": lambda: session.clear_session(),
    }


async def _counts(url: str) -> tuple[int, int]:
    """Sessions and messages rows, read on an engine of its own."""
    sessions_table, messages_table = tables()
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            sessions = (await conn.execute(select(func.count()).select_from(sessions_table)))
            messages = (await conn.execute(select(func.count()).select_from(messages_table)))
            return int(sessions.scalar_one()), int(messages.scalar_one())
    finally:
        await engine.dispose()


async def _close_and_assert_all_refused(store: SessionStore) -> None:
    """Close ``store``; then each operation, of the store and of a session made before, refuses."""
    calls = operations(store)  # the application still holds its session objects
    await store.close()
    refused = closed_error()
    for name, call in calls.items():
        with pytest.raises(refused) as caught:
            await call()
        assert "close" in str(caught.value), f"{name}: {caught.value}"


async def test_every_operation_after_close_raises_store_closed_and_writes_nothing(
    shared_db_url: str,
) -> None:
    store = SessionStore(shared_db_url)
    await store.create_tables()
    await store.add_items("s", [ITEM])
    before = await _counts(shared_db_url)
    await _close_and_assert_all_refused(store)
    with pytest.raises(closed_error()):
        store.session("made-after-close")
    assert await _counts(shared_db_url) == before


async def test_close_is_idempotent_and_stays_final(shared_db_url: str) -> None:
    store = SessionStore(shared_db_url)
    await store.create_tables()
    await store.close()
    await store.close()
    async with store:  # leaving the context closes once more
        pass
    with pytest.raises(closed_error()):
        await store.get_items("s")


async def test_a_store_on_a_hosts_engine_closes_without_disposing_it(engine: AsyncEngine) -> None:
    store = SessionStore(engine)
    await store.create_tables()
    await _close_and_assert_all_refused(store)
    async with engine.connect() as conn:  # the host's engine still works
        assert (await conn.execute(select(func.count()).select_from(store.messages))).scalar() == 0


def _sdk_settings_type() -> type[Any]:
    from agents.memory import SessionSettings as SDKSessionSettings

    return SDKSessionSettings


@pytest.mark.sqlite
async def test_session_settings_default_to_session_settings_not_none(tmp_path: Any) -> None:
    settings_type = _sdk_settings_type()  # the SDK is imported: its type is the one expected
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    async with SessionStore(url) as store:
        made = [store.session("a"), SQLAlchemySession("b", store=store)]
        made.append(SQLAlchemySession("c", engine=store.engine))
        from_url = SQLAlchemySession.from_url("d", url=url)
        made.append(from_url)
        for session in made:
            assert isinstance(session.session_settings, settings_type), session.session_settings
            assert session.session_settings.limit is None
        await from_url.engine.dispose()
