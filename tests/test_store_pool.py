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


async def test_a_burst_of_200_concurrent_sessions_reuses_pooled_connections(db_url: str) -> None:
    import asyncio

    from sqlalchemy import event

    from agent_session_store.store import POOL_SIZE

    async with SessionStore(db_url) as store:
        await store.create_tables()
        opened: list[Any] = []
        closed: list[Any] = []
        engine = store.engine.sync_engine
        event.listen(engine, "connect", lambda *args: opened.append(args))
        event.listen(engine, "close", lambda *args: closed.append(args))

        async def conversation(n: int) -> None:
            session = store.session(f"burst-{n}")
            await session.clear_session()
            await session.add_items([{"role": "user", "content": f"hi {n}"}])
            assert await session.get_items() == [{"role": "user", "content": f"hi {n}"}]

        for _ in range(2):  # a second burst finds the first one's connections
            await asyncio.gather(*(conversation(n) for n in range(200)))
        limit = 1 if db_url.endswith(":memory:") else POOL_SIZE
        assert len(opened) <= limit, f"{len(opened)} connections opened for two bursts"
        assert closed == [], "connections were closed between calls"
