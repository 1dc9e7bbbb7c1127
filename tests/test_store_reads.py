"""The read and pop paths tuned for speed keep the Session protocol's behaviour."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from agent_session_store import SessionStore
from agent_session_store._probe import Path
from agent_session_store._statements import PAGE as _PAGE
from agent_session_store.store import HEAD as _HEAD

LONG = _HEAD + 2 * _PAGE + 7  # past the one-statement read, over several streamed pages


def msg(i: int) -> dict[str, Any]:
    return {"role": "user", "content": f"message {i}"}


async def test_full_read_of_a_history_longer_than_a_page_returns_every_item_in_order(
    store: SessionStore,
) -> None:
    session = store.session("long")
    await session.add_items([msg(i) for i in range(LONG)])
    await store.session("other").add_items([msg(-1)])
    assert await session.get_items() == [msg(i) for i in range(LONG)]


@pytest.mark.parametrize("count", [_HEAD, _HEAD + 1])
async def test_full_read_at_the_page_boundary_returns_every_item(
    store: SessionStore, count: int
) -> None:
    session = store.session("edge")
    await session.add_items([msg(i) for i in range(count)])
    assert await session.get_items() == [msg(i) for i in range(count)]


async def test_streamed_full_read_skips_undecodable_rows_with_a_warning(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    session = store.session("long")
    await session.add_items([msg(i) for i in range(LONG)])
    async with store.engine.begin() as conn:
        await conn.execute(insert(store.messages), [{"session_id": "long", "message_data": "{x"}])
    await session.add_items([msg(LONG)])
    with caplog.at_level(logging.WARNING, logger="agent_session_store"):
        assert await session.get_items() == [msg(i) for i in range(LONG + 1)]
    assert "not valid JSON" in caplog.text


async def test_full_reads_run_alongside_writes_to_the_same_session(store: SessionStore) -> None:
    session = store.session("busy")
    await session.add_items([msg(i) for i in range(LONG)])

    async def reader() -> list[Any]:
        return await session.get_items()

    async def writer() -> None:
        for i in range(5):
            await session.add_items([msg(LONG + i)])

    reads = await asyncio.gather(reader(), writer(), reader())
    for items in (reads[0], reads[2]):
        assert items == [msg(i) for i in range(len(items))]
        assert LONG <= len(items) <= LONG + 5


async def test_pop_item_after_a_streamed_read_removes_the_newest(store: SessionStore) -> None:
    session = store.session("long")
    await session.add_items([msg(i) for i in range(LONG)])
    assert len(await session.get_items()) == LONG
    assert await session.pop_item() == msg(LONG - 1)
    assert await session.get_items(limit=1) == [msg(LONG - 2)]


async def test_a_full_read_past_2000_items_streams_on_the_driver_path_without_core(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = store.session("long-driver")
    await session.add_items([msg(i) for i in range(LONG)])
    through_core: list[Any] = []
    for name in ("execute", "stream"):
        original = getattr(AsyncConnection, name)

        async def spy(self: AsyncConnection, *args: Any, _o: Any = original, **kw: Any) -> Any:
            through_core.append(args[0])
            return await _o(self, *args, **kw)

        monkeypatch.setattr(AsyncConnection, name, spy)
    assert store._transport.probe.path() is Path.DRIVER
    assert await session.get_items() == [msg(i) for i in range(LONG)]
    assert through_core == [], "the long read went through SQLAlchemy Core"
    # And the same read on Core (a statement listener forces it) returns the same items.
    event.listen(store.engine.sync_engine, "before_cursor_execute", _no_op)
    try:
        assert await session.get_items() == [msg(i) for i in range(LONG)]
        assert through_core
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", _no_op)


def _no_op(*args: Any) -> None:
    return None
