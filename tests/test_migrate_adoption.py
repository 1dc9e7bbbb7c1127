"""Adopting databases the Agents SDK's own sessions wrote: the real SDK classes write first."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from agents import SQLiteSession
from agents.extensions.memory import AsyncSQLiteSession
from agents.extensions.memory import SQLAlchemySession as SDKSQLAlchemySession
from alembic import command
from alembic.config import Config
from sqlalchemy import String, column, inspect, select, table, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import MigrationError, SessionStore, check, current, upgrade
from agent_session_store.migrate import _script_location, head_revision

from .conftest import dialect_of

CONVERSATIONS: dict[str, list[dict[str, Any]]] = {
    "alice": [
        {"role": "user", "content": "Bonjour, ça va ? 👋"},
        {"role": "assistant", "content": "Très bien."},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"role": "user", "content": "ok"},
    ],
    "bob": [{"role": "user", "content": f"message {i}"} for i in range(7)],
}


async def play(session_for: Any) -> dict[str, list[Any]]:
    """Interleave writes to two sessions through SDK sessions; pop one; return what they read."""
    sessions = {sid: session_for(sid) for sid in CONVERSATIONS}
    for i in range(0, 8, 2):
        for sid, items in CONVERSATIONS.items():
            if items[i : i + 2]:
                await sessions[sid].add_items(items[i : i + 2])
    await sessions["bob"].pop_item()
    await sessions["bob"].add_items([{"role": "user", "content": "after pop"}])
    return {sid: await session.get_items() for sid, session in sessions.items()}


async def raw_messages(engine: AsyncEngine, name: str) -> list[tuple[Any, ...]]:
    source = table(name, column("id"), column("session_id"), column("message_data"))
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(select(source).order_by(source.c.id))]


async def raw_times(engine: AsyncEngine, name: str) -> dict[int, datetime]:
    """Message times as aware UTC, read the way the SDK's tables store them."""
    async with engine.connect() as conn:
        if engine.dialect.name in ("mysql", "mariadb"):
            await conn.execute(text("SET time_zone = '+00:00'"))  # TIMESTAMP shows UTC
        source = table(name, column("id"), column("created_at"))
        rows = (await conn.execute(select(source))).all()
    times = {}
    for row_id, value in rows:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        times[row_id] = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    return times


async def assert_adopted(url: str, expected: dict[str, list[Any]], **names: str) -> None:
    sessions = names.get("sessions_table", "agent_sessions")
    messages = names.get("messages_table", "agent_messages")
    engine = create_async_engine(url, poolclass=NullPool)
    before = await raw_messages(engine, messages)
    times_before = await raw_times(engine, messages)
    assert await current(engine, **names) is None

    await upgrade(engine, **names)

    assert await current(engine, **names) == head_revision()
    await check(engine, **names)  # the adopted tables are exactly the models' schema
    assert await raw_messages(engine, messages) == before  # same ids, same rows
    async with SessionStore(engine, **names) as store:
        async with engine.connect() as conn:
            got = await conn.execute(select(store.messages.c.id, store.messages.c.created_at))
            assert dict(got.all()) == times_before
        for sid, items in expected.items():
            assert await store.session(sid).get_items() == items
            assert await store.session(sid).get_items(limit=2) == items[-2:]
        bob = store.session("bob")
        await bob.add_items([{"role": "user", "content": "ours"}])
        assert await bob.pop_item() == {"role": "user", "content": "ours"}
        assert await bob.pop_item() == expected["bob"][-1]
        await store.clear_session("alice")
        assert await store.session("alice").get_items() == []
    async with engine.connect() as conn:
        names_left = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert sessions in names_left
    await engine.dispose()


@pytest.mark.sqlite
async def test_upgrade_adopts_a_database_written_by_sdk_sqlite_session(tmp_path: Path) -> None:
    path = tmp_path / "sdk.db"
    opened: list[SQLiteSession] = []

    def session_for(sid: str) -> SQLiteSession:
        opened.append(SQLiteSession(sid, path))
        return opened[-1]

    expected = await play(session_for)
    for session in opened:
        session.close()
    await assert_adopted(f"sqlite+aiosqlite:///{path}", expected)


@pytest.mark.sqlite
async def test_upgrade_adopts_a_database_written_by_sdk_async_sqlite_session(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sdk.db"
    opened: list[AsyncSQLiteSession] = []

    def session_for(sid: str) -> AsyncSQLiteSession:
        opened.append(AsyncSQLiteSession(sid, path))
        return opened[-1]

    expected = await play(session_for)
    for session in opened:
        await session.close()
    await assert_adopted(f"sqlite+aiosqlite:///{path}", expected)


@pytest.mark.parametrize(
    "names",
    [{}, {"sessions_table": "s_x", "messages_table": "m_x"}],
    ids=["default_names", "custom_names"],
)
async def test_upgrade_adopts_tables_written_by_sdk_sqlalchemy_session(
    shared_db_url: str, names: dict[str, str]
) -> None:
    dialect = dialect_of(shared_db_url)
    # Writers in another time zone: adoption must keep each message's instant, not wall time.
    connect_args: dict[str, Any] = {}
    if dialect == "mariadb":
        connect_args = {"init_command": "SET time_zone = '-05:00'"}
    engine = create_async_engine(shared_db_url, poolclass=NullPool, connect_args=connect_args)
    first = SDKSQLAlchemySession("setup", engine=engine, create_tables=True, **names)
    if dialect == "mariadb":
        # The SDK's unbounded String cannot be created on MySQL/MariaDB; users made these
        # tables from the SDK's own definition with a length, as done here.
        for tbl in first._metadata.tables.values():
            if "session_id" in tbl.c:
                tbl.c.session_id.type = String(255)
        async with engine.begin() as conn:
            await conn.run_sync(first._metadata.create_all)

    def session_for(sid: str) -> SDKSQLAlchemySession:
        create = dialect != "mariadb"
        return SDKSQLAlchemySession(sid, engine=engine, create_tables=create, **names)

    expected = await play(session_for)
    await engine.dispose()
    await assert_adopted(shared_db_url, expected, **names)


async def test_upgrade_adopts_tables_made_by_create_tables(shared_db_url: str) -> None:
    async with SessionStore(shared_db_url) as store:
        await store.create_tables()
        await store.session("bob").add_items(CONVERSATIONS["bob"])
        await store.session("alice").add_items(CONVERSATIONS["alice"])
    await assert_adopted(shared_db_url, CONVERSATIONS)


@pytest.mark.sqlite
async def test_upgrade_refuses_sdk_session_ids_too_long_and_changes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sdk.db"
    long_id = "x" * 300
    sdk = SQLiteSession(long_id, path)
    await sdk.add_items([{"role": "user", "content": "kept"}])
    sdk.close()
    url = f"sqlite+aiosqlite:///{path}"
    with pytest.raises(MigrationError, match="1 rows of 'agent_sessions' have a session_id"):
        await upgrade(url)
    assert await current(url) is None
    sdk = SQLiteSession(long_id, path)
    assert await sdk.get_items() == [{"role": "user", "content": "kept"}]
    sdk.close()


async def test_upgrade_refuses_tables_of_another_layout(shared_db_url: str) -> None:
    engine = create_async_engine(shared_db_url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE agent_sessions (session_id VARCHAR(10), x INT)"))
        await conn.execute(text("CREATE TABLE agent_messages (id INT, y INT)"))
    with pytest.raises(MigrationError, match="cannot be adopted"):
        await upgrade(engine)
    assert await current(engine) is None
    await engine.dispose()


async def test_upgrade_refuses_a_sessions_table_without_its_messages_table(
    shared_db_url: str,
) -> None:
    engine = create_async_engine(shared_db_url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE agent_sessions (session_id VARCHAR(10))"))
    with pytest.raises(MigrationError, match="'agent_sessions' exists but 'agent_messages'"):
        await upgrade(engine)
    await engine.dispose()


@pytest.mark.sqlite
async def test_adoption_refuses_a_sqlite_connection_with_foreign_keys_on_and_keeps_messages(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sdk.db"
    sdk = SQLiteSession("alice", path)
    await sdk.add_items(CONVERSATIONS["alice"])
    sdk.close()
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", poolclass=NullPool)

    def upgrade_in_callers_transaction(connection: Connection) -> None:
        connection.exec_driver_sql("PRAGMA foreign_keys = ON")
        connection.exec_driver_sql("SELECT 1")  # the caller's transaction has begun
        config = Config()
        config.set_main_option("script_location", _script_location())
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.connect() as conn:
        with pytest.raises(MigrationError, match="cascade-delete every message"):
            await conn.run_sync(upgrade_in_callers_transaction)
    await engine.dispose()
    sdk = SQLiteSession("alice", path)
    assert await sdk.get_items() == CONVERSATIONS["alice"]
    sdk.close()
