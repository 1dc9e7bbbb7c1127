"""A store-owned engine skips the pool's rollback on return: nothing is ever left open."""

from __future__ import annotations

from typing import Any

from agent_session_store import SessionStore


def in_transaction(driver_connection: Any) -> bool:
    """Whether the raw driver connection has a transaction open, on each supported driver."""
    if hasattr(driver_connection, "is_in_transaction"):  # asyncpg
        return bool(driver_connection.is_in_transaction())
    if hasattr(driver_connection, "get_transaction_status"):  # aiomysql
        return bool(driver_connection.get_transaction_status())
    return bool(driver_connection._conn.in_transaction)  # aiosqlite's sqlite3 connection


async def test_connections_return_to_the_pool_with_no_open_transaction(db_url: str) -> None:
    one_connection = {"pool_size": 1, "max_overflow": 0}
    if db_url.endswith(":memory:"):
        one_connection = {}  # StaticPool: always the one connection
    async with SessionStore(db_url, engine_kwargs=one_connection) as store:
        await store.create_tables()
        session = store.session("s1")
        operations = [
            lambda: session.add_items([{"n": 1}, {"n": 2}]),
            lambda: session.add_items([{"n": 3}]),
            lambda: session.get_items(),
            lambda: session.get_items(limit=1),
            lambda: session.pop_item(),
            lambda: session.clear_session(),
            lambda: session.pop_item(),
        ]
        for operation in operations:
            await operation()
            raw = await store.engine.raw_connection()
            try:
                assert not in_transaction(raw.driver_connection)
            finally:
                raw.close()
