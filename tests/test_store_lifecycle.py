"""Closing is final; SDK-shaped settings, ``ensure_ascii`` and engine types behave as the SDK's."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.ext.asyncio import create_async_engine

from agent_session_store import (
    AgentSessionStoreError,
    InvalidSessionSettingsError,
    SessionStore,
    SQLAlchemySession,
    StoreClosedError,
)

Call = Callable[[SessionStore], Awaitable[Any]]

#: Every operation of a store and of a session made from it.
OPERATIONS: dict[str, Call] = {
    "add_items": lambda s: s.add_items("s", [{"n": 9}]),
    "add_items([])": lambda s: s.add_items("s", []),
    "get_items": lambda s: s.get_items("s"),
    "get_items(limit=0)": lambda s: s.get_items("s", limit=0),
    "pop_item": lambda s: s.pop_item("s"),
    "clear_session": lambda s: s.clear_session("s"),
    "create_tables": lambda s: s.create_tables(),
    "list_sessions": lambda s: s.list_sessions(),
    "count_items": lambda s: s.count_items("s"),
    "session_info": lambda s: s.session_info("s"),
    "delete_sessions": lambda s: s.delete_sessions(older_than=timedelta(0)),
    "import_sessions": lambda s: s.import_sessions([{"session": "t"}]),
    "session.add_items([])": lambda s: _session.add_items([]),
    "session.add_items": lambda s: _session.add_items([{"n": 9}]),
    "session.get_items": lambda s: _session.get_items(),
    "session.pop_item": lambda s: _session.pop_item(),
    "session.clear_session": lambda s: _session.clear_session(),
}
_session: Any = None


async def _count_rows(url: str, store: SessionStore) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            stmt = select(func.count()).select_from(store.messages)
            return int((await conn.execute(stmt)).scalar_one())
    finally:
        await engine.dispose()


@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_after_close_every_operation_of_the_store_and_its_sessions_raises_store_closed(
    db_url: str, operation: str
) -> None:
    global _session
    store = SessionStore(db_url)
    await store.create_tables()
    await store.add_items("s", [{"n": 1}])
    _session = store.session("s")
    await store.close()
    await store.close()  # idempotent
    connects: list[Any] = []
    event.listen(store.engine.sync_engine, "connect", lambda *args: connects.append(args))

    with pytest.raises(StoreClosedError, match="closed") as caught:
        await OPERATIONS[operation](store)
    assert isinstance(caught.value, RuntimeError)
    assert isinstance(caught.value, AgentSessionStoreError)
    with pytest.raises(StoreClosedError):
        store.session("another")
    if not db_url.endswith(":memory:"):  # the memory database went with the store's engine
        assert await _count_rows(db_url, store) == 1, "a write landed after close()"
    assert connects == [], "the closed store opened a connection"


async def test_export_after_close_raises_store_closed(db_url: str) -> None:
    store = SessionStore(db_url)
    await store.create_tables()
    await store.close()
    with pytest.raises(StoreClosedError):
        [record async for record in store.export_sessions()]


async def test_close_leaves_a_host_engine_usable_but_refuses_the_store(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        store = SessionStore(engine)
        await store.create_tables()
        await store.add_items("s", [{"n": 1}])
        await store.close()
        with pytest.raises(StoreClosedError):
            await store.get_items("s")
        other = SessionStore(engine)
        assert await other.get_items("s") == [{"n": 1}]
    finally:
        await engine.dispose()


async def test_session_settings_default_to_an_empty_session_settings(store: SessionStore) -> None:
    session = store.session("s")
    assert session.session_settings is not None
    assert session.session_settings.limit is None
    # The SDK's own type, since this test process has imported the SDK.
    assert "agents" not in sys.modules or (
        type(session.session_settings).__module__ == "agents.memory.session_settings"
    )
    await session.add_items([{"n": 1}, {"n": 2}])
    assert await session.get_items() == [{"n": 1}, {"n": 2}]


async def test_a_dict_session_setting_with_an_unknown_key_is_refused_by_name(
    store: SessionStore, db_url: str
) -> None:
    with pytest.raises(InvalidSessionSettingsError, match="limt"):
        store.session("s", session_settings={"limt": 5})
    with pytest.raises(TypeError, match="limt"):  # a TypeError, as the SDK raises
        SQLAlchemySession.from_url("s", url=db_url, session_settings={"limt": 5})
    assert store.session("s", session_settings={"limit": 5}).session_settings.limit == 5


async def _stored_text(store: SessionStore, session_id: str) -> str:
    async with store.engine.connect() as conn:
        m = store.messages
        stmt = select(m.c.message_data).where(m.c.session_id == session_id)
        return str((await conn.execute(stmt)).scalar_one())


ITEM = {"role": "user", "content": "héllo 🚀 世界"}


async def test_sessions_store_ascii_escaped_json_by_default_as_the_sdk_does(
    store: SessionStore,
) -> None:
    await store.create_tables()
    default = SQLAlchemySession("ascii", store=store)
    await default.add_items([ITEM])
    text = await _stored_text(store, "ascii")
    assert text.isascii() and text == json.dumps(ITEM, separators=(",", ":"))
    assert await default.get_items() == [ITEM]


async def test_ensure_ascii_false_stores_utf8_and_both_formats_read_back(
    store: SessionStore, db_url: str
) -> None:
    await store.create_tables()
    utf8 = SQLAlchemySession("utf8", store=store, ensure_ascii=False)
    await utf8.add_items([ITEM])
    text = await _stored_text(store, "utf8")
    assert text == json.dumps(ITEM, ensure_ascii=False, separators=(",", ":"))
    assert await utf8.get_items() == [ITEM]
    if not db_url.endswith(":memory:"):
        other = SQLAlchemySession.from_url("utf8", url=db_url, ensure_ascii=True)
        try:
            assert await other.get_items() == [ITEM]
        finally:
            await other.engine.dispose()


def test_a_synchronous_engine_is_refused_with_what_to_use_instead() -> None:
    engine = create_engine("sqlite://")
    for make in (
        lambda: SessionStore(engine),  # type: ignore[arg-type]
        lambda: SQLAlchemySession("s", engine=engine),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match="create_async_engine"):
            make()
    engine.dispose()
