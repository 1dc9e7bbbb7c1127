"""Records calls pass the store's gate as the four operations do: closed, schema, ``:memory:``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agent_session_store import SchemaOutOfDateError, SessionStore, StoreClosedError, upgrade
from agent_session_store.records import SessionRecords

FIRST = "agent_session_store_0001"

CALLS: dict[str, Callable[[SessionRecords], Awaitable[Any]]] = {
    "info": lambda r: r.info("chat"),
    "update": lambda r: r.update("chat", title="t", metadata={"k": 1}),
    "list_sessions": lambda r: r.list_sessions(),
    "purge_expired": lambda r: r.purge_expired(),
    "purge_expired_dry": lambda r: r.purge_expired(dry_run=True),
    "erase_user": lambda r: r.erase_user("u-1"),
}


@pytest.mark.parametrize("call", list(CALLS))
async def test_records_calls_on_a_closed_store_raise_store_closed_error(
    db_url: str, call: str
) -> None:
    store = SessionStore(db_url)
    await store.create_tables()
    await store.session("chat", user_id="u-1").add_items([{"n": 1}])
    records = store.records  # taken while open, used after close
    handle = store.session("chat", user_id="u-1")
    await store.close()
    with pytest.raises(StoreClosedError):
        await CALLS[call](records)
    with pytest.raises(StoreClosedError):
        _ = store.records
    with pytest.raises(StoreClosedError):
        await handle.info()
    with pytest.raises(StoreClosedError):
        await handle.update(title="after close")


@pytest.mark.parametrize("call", list(CALLS))
async def test_records_calls_check_the_schema_when_the_store_was_built_to(
    shared_db_url: str, call: str
) -> None:
    await upgrade(shared_db_url, FIRST)  # the tables of revision 0001, before records
    async with SessionStore(shared_db_url, check_schema=True) as store:
        with pytest.raises(SchemaOutOfDateError, match=FIRST):
            await CALLS[call](store.records)
    await upgrade(shared_db_url)
    async with SessionStore(shared_db_url, check_schema=True) as store:
        await CALLS[call](store.records)  # at head: the check passes and the call runs


async def test_records_calls_on_sqlite_memory_take_the_one_connection_in_turn() -> None:
    # One connection serves every task: records calls interleaved with the four operations
    # must queue on it, not start a second transaction inside another one's.
    async with SessionStore("sqlite+aiosqlite:///:memory:") as store:
        await store.create_tables()
        session = store.session("chat")
        await session.add_items([{"n": -1}])

        async def one(n: int) -> None:
            await session.update(metadata={f"k{n}": n})
            await session.add_items([{"n": n}])
            assert await store.info("chat") is not None
            await store.list_sessions(metadata={f"k{n}": n})
            await store.purge_expired()

        await asyncio.gather(*(one(n) for n in range(40)))
        info = await store.info("chat")
        assert info is not None and info.item_count == 41
        assert info.metadata == {f"k{n}": n for n in range(40)}
