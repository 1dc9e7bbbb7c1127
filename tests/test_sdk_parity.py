"""Drop-in parity: what the Agents SDK's own session suites check, asserted on our session.

Each test is one public behaviour from the SDK's ``test_sqlalchemy_session.py``,
``test_async_sqlite_session.py`` or ``tests/memory/test_session.py`` (docs/sdk-parity.md maps
them), written for our class and run on SQLite, PostgreSQL and MariaDB. Sessions are built the
way code written for the SDK builds them (``from_url``, ``engine=``), so a pass means the
import can be swapped.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import pytest
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import (
    AgentSessionStoreError,
    InvalidItemError,
    SessionSettings,
    SessionStore,
    SQLAlchemySession,
)
from tests.conftest import dialect_of

agents = pytest.importorskip("agents")

OpenSession = Callable[..., SQLAlchemySession]
T = TypeVar("T")
#: Seconds any one call may take in the closing tests: a hang there fails, it never stalls the run.
BOUND = 10


async def bounded(operation: Awaitable[T]) -> T:
    """``operation``'s result; a test failure (without the driver's deep traceback) on a hang."""
    try:
        return await asyncio.wait_for(operation, BOUND)
    except TimeoutError:
        pytest.fail(f"still running after {BOUND} s", pytrace=False)


def say(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "content": content}


def contents(items: list[Any]) -> list[Any]:
    return [item.get("content") for item in items]


def ids(items: list[Any]) -> list[Any]:
    return [item["id"] for item in items]


@pytest.fixture
async def open_session(db_url: str) -> AsyncIterator[OpenSession]:
    """``SQLAlchemySession.from_url(..., create_tables=True)``, the SDK suites' constructor."""
    opened: list[SQLAlchemySession] = []

    def open_(session_id: str, **kwargs: Any) -> SQLAlchemySession:
        kwargs.setdefault("create_tables", True)
        session = SQLAlchemySession.from_url(session_id, url=db_url, **kwargs)
        opened.append(session)
        return session

    yield open_
    for session in opened:
        await session.engine.dispose()


async def raw_text(session: SQLAlchemySession) -> list[str]:
    """The JSON text as stored in the messages table, oldest first."""
    messages = session.store.messages
    async with session.engine.connect() as conn:
        rows = await conn.execute(
            select(messages.c.message_data)
            .where(messages.c.session_id == session.session_id)
            .order_by(messages.c.id)
        )
        return [row[0] for row in rows]


async def insert_corrupt_row(session: SQLAlchemySession) -> None:
    """A row another program wrote that is not JSON, newest in the session."""
    store = session.store
    async with session.engine.begin() as conn:
        exists = await conn.execute(
            select(store.sessions.c.session_id).where(
                store.sessions.c.session_id == session.session_id
            )
        )
        if exists.first() is None:
            await conn.execute(insert(store.sessions).values(session_id=session.session_id))
        await conn.execute(
            insert(store.messages).values(
                session_id=session.session_id, message_data="not valid json {{{"
            )
        )


# -- add, get, pop, clear -----------------------------------------------------------------------


async def test_items_added_come_back_equal_and_in_order_then_pop_and_clear_remove_them(
    open_session: OpenSession,
) -> None:
    session = open_session("direct")
    items = [say("user", "Hello"), say("assistant", "Hi there!"), say("user", "How are you?")]
    await session.add_items(items)
    assert await session.get_items() == items
    assert await session.pop_item() == items[2]
    assert await session.pop_item() == items[1]
    assert await session.get_items() == items[:1]
    await session.clear_session()
    assert await session.get_items() == []


async def test_pop_item_returns_items_newest_first_until_empty_then_none(
    open_session: OpenSession,
) -> None:
    session = open_session("pop")
    assert await session.pop_item() is None
    items = [say("user", "one"), say("assistant", "two"), say("user", "three")]
    await session.add_items(items)
    assert [await session.pop_item() for _ in range(4)] == [*reversed(items), None]
    assert await session.get_items() == []


async def test_add_items_of_an_empty_list_changes_nothing(open_session: OpenSession) -> None:
    session = open_session("empty-add")
    await session.add_items([])
    assert await session.get_items() == []
    assert await session.store.session_info("empty-add") is None


async def test_pop_and_reads_of_one_session_leave_another_session_alone(
    engine: AsyncEngine,
) -> None:
    first = SQLAlchemySession("session_1", engine=engine, create_tables=True)
    second = SQLAlchemySession("session_2", engine=engine, create_tables=True)
    await first.add_items([say("user", "first's only message")])
    await second.add_items([say("user", "second 1"), say("user", "second 2")])
    assert await second.pop_item() == say("user", "second 2")
    assert await first.get_items() == [say("user", "first's only message")]
    assert await second.get_items() == [say("user", "second 1")]
    await second.clear_session()
    assert await first.get_items() == [say("user", "first's only message")]


async def test_get_items_limit_returns_the_latest_n_oldest_first_and_zero_returns_none(
    open_session: OpenSession,
) -> None:
    session = open_session("limit")
    items = [say("user" if i % 2 == 0 else "assistant", f"m{i}") for i in range(6)]
    await session.add_items(items)
    assert await session.get_items(limit=2) == items[-2:]
    assert await session.get_items(limit=4) == items[-4:]
    assert await session.get_items(limit=10) == items
    assert await session.get_items(limit=0) == []
    assert await session.get_items() == items


@pytest.mark.parametrize(
    "content",
    [
        "こんにちは", "Привет", "😊👍", "café",
        "O'Reilly", "DROP TABLE sessions;", '"SELECT * FROM users WHERE name = "admin";"',
        "Robert'); DROP TABLE students;--",
    ],
)
async def test_unicode_and_sql_metacharacters_round_trip_unchanged(
    open_session: OpenSession, content: str
) -> None:
    session = open_session("text")
    await session.add_items([say("user", content), say("assistant", "after")])
    assert contents(await session.get_items()) == [content, "after"]


# -- order when timestamps tie ------------------------------------------------------------------


async def test_items_with_identical_timestamps_keep_insertion_order_in_reads_and_pop(
    open_session: OpenSession,
) -> None:
    session = open_session("same-time")
    await session.add_items([{"id": "older", "role": "user", "content": "old"}])
    await session.add_items([
        {"id": "rs_1", "type": "reasoning", "summary": []},
        {"id": "msg_1", "type": "message", "role": "assistant", "content": []},
    ])
    messages = session.store.messages
    async with session.engine.begin() as conn:
        await conn.execute(
            update(messages)
            .where(messages.c.session_id == session.session_id)
            .values(created_at=datetime(2025, 10, 15, 17, 26, 39, 132483, tzinfo=timezone.utc))
        )
    assert ids(await session.get_items()) == ["older", "rs_1", "msg_1"]
    assert ids(await session.get_items(limit=2)) == ["rs_1", "msg_1"]
    popped = await session.pop_item()
    assert popped is not None and popped["id"] == "msg_1"
    assert ids(await session.get_items()) == ["older", "rs_1"]


# -- rows that are not JSON ---------------------------------------------------------------------


async def test_pop_item_skips_a_corrupt_newest_row_and_returns_the_next_valid_item(
    open_session: OpenSession,
) -> None:
    session = open_session("pop-corrupt")
    await session.add_items([say("user", "valid")])
    await insert_corrupt_row(session)
    assert await session.pop_item() == say("user", "valid")
    assert await session.get_items() == []


async def test_pop_item_drops_a_session_of_only_corrupt_rows_and_returns_none(
    open_session: OpenSession,
) -> None:
    session = open_session("only-corrupt")
    await session.get_items()  # creates the tables
    await insert_corrupt_row(session)
    assert await session.pop_item() is None
    assert await session.get_items() == []
    assert await raw_text(session) == []


@pytest.mark.parametrize("limit_from", ["argument", "session_settings"])
async def test_limit_counts_valid_items_reading_past_corrupt_newest_rows(
    open_session: OpenSession, limit_from: str
) -> None:
    settings = {"limit": 2} if limit_from == "session_settings" else None
    session = open_session("limit-corrupt", session_settings=settings)
    await session.add_items([say("user", "valid 0"), say("assistant", "valid 1"),
                             say("user", "valid 2")])
    await insert_corrupt_row(session)
    limit = 2 if limit_from == "argument" else None
    assert contents(await session.get_items(limit=limit)) == ["valid 1", "valid 2"]
    assert contents(await session.get_items(limit=5)) == ["valid 0", "valid 1", "valid 2"]


# -- session_settings ---------------------------------------------------------------------------


async def test_session_settings_default_to_an_empty_sdk_session_settings(
    open_session: OpenSession, store: SessionStore
) -> None:
    for session in (open_session("default-settings"), store.session("default-settings")):
        assert isinstance(session.session_settings, agents.SessionSettings)
        assert session.session_settings.limit is None


@pytest.mark.parametrize("given_as", ["sdk_class", "our_class", "dictionary"])
async def test_session_settings_given_as_a_class_or_dict_become_sdk_session_settings(
    open_session: OpenSession, store: SessionStore, given_as: str
) -> None:
    settings: Any = {
        "sdk_class": agents.SessionSettings(limit=5),
        "our_class": SessionSettings(limit=5),
        "dictionary": {"limit": 5},
    }[given_as]
    for session in (
        open_session("settings", session_settings=settings),
        store.session("settings", session_settings=settings),
    ):
        assert isinstance(session.session_settings, agents.SessionSettings)
        assert session.session_settings.limit == 5


async def test_a_dict_limit_of_zero_is_kept_and_resolves_like_the_sdk(
    open_session: OpenSession,
) -> None:
    session = open_session("zero", session_settings={"limit": 0})
    assert session.session_settings.limit == 0
    assert session.session_settings.resolve({"limit": 4}).limit == 4


async def test_session_settings_dict_with_an_unknown_key_is_refused_naming_it(
    open_session: OpenSession, store: SessionStore
) -> None:
    with pytest.raises(TypeError, match="limt"):
        open_session("typo", session_settings={"limt": 5})
    with pytest.raises(TypeError, match="limt"):
        store.session("typo", session_settings={"limt": 5})


async def test_get_items_without_limit_uses_the_settings_limit_and_an_explicit_one_wins(
    open_session: OpenSession,
) -> None:
    session = open_session("settings-limit", session_settings=agents.SessionSettings(limit=3))
    items = [say("user", f"Message {i}") for i in range(10)]
    await session.add_items(items)
    assert await session.get_items() == items[-3:]
    assert await session.get_items(limit=2) == items[-2:]
    assert await session.get_items(limit=0) == []


def test_our_session_settings_resolve_lets_the_override_win_and_leaves_the_base_alone() -> None:
    base = SessionSettings(limit=100)
    assert base.resolve(SessionSettings(limit=50)).limit == 50
    assert base.resolve({"limit": 50}).limit == 50
    assert base.resolve(agents.SessionSettings(limit=50)).limit == 50
    assert base.limit == 100
    assert base.resolve(None) is base
    assert base.resolve(SessionSettings()).limit == 100


# -- ensure_ascii -------------------------------------------------------------------------------


async def test_ensure_ascii_true_stores_escaped_json_that_reads_back_unchanged(
    open_session: OpenSession,
) -> None:
    session = open_session("ascii", ensure_ascii=True)
    await session.add_items([say("user", "café")])
    [stored] = await raw_text(session)
    assert "\\u00e9" in stored and "café" not in stored
    assert await session.get_items() == [say("user", "café")]


async def test_ensure_ascii_false_stores_readable_utf8_that_reads_back_unchanged(
    open_session: OpenSession,
) -> None:
    session = open_session("utf8", ensure_ascii=False)
    await session.add_items([say("user", "café")])
    [stored] = await raw_text(session)
    assert "café" in stored and "\\u00e9" not in stored
    assert await session.get_items() == [say("user", "café")]


async def test_ensure_ascii_is_taken_by_the_engine_constructor_too(engine: AsyncEngine) -> None:
    escaped = SQLAlchemySession("a", engine=engine, create_tables=True, ensure_ascii=True)
    readable = SQLAlchemySession("b", engine=engine, create_tables=True, ensure_ascii=False)
    await escaped.add_items([say("user", "café")])
    await readable.add_items([say("user", "café")])
    assert "\\u00e9" in (await raw_text(escaped))[0]
    assert "café" in (await raw_text(readable))[0]


async def test_by_default_non_ascii_is_stored_escaped_as_the_sdk_stores_it(
    open_session: OpenSession, engine: AsyncEngine
) -> None:
    for session in (
        open_session("default-encoding"),
        SQLAlchemySession("default-encoding-2", engine=engine, create_tables=True),
    ):
        await session.add_items([say("user", "café")])
        [stored] = await raw_text(session)
        assert "\\u00e9" in stored and "café" not in stored
        assert await session.get_items() == [say("user", "café")]


async def test_history_written_escaped_by_the_sdk_reads_back_unchanged(
    open_session: OpenSession,
) -> None:
    session = open_session("sdk-written")
    await session.get_items()
    store = session.store
    async with session.engine.begin() as conn:
        await conn.execute(insert(store.sessions).values(session_id="sdk-written"))
        await conn.execute(
            insert(store.messages).values(
                session_id="sdk-written", message_data='{"role":"user","content":"caf\\u00e9"}'
            )
        )
    assert await session.get_items() == [say("user", "café")]


# -- engine property ----------------------------------------------------------------------------


async def test_from_url_exposes_its_async_engine_for_the_caller_to_dispose(db_url: str) -> None:
    session = SQLAlchemySession.from_url("engine", url=db_url, create_tables=True)
    assert isinstance(session.engine, AsyncEngine)
    assert session.engine.pool is not None
    await session.add_items([say("user", "hi")])
    await session.engine.dispose()


async def test_a_session_on_an_external_engine_exposes_that_same_engine(
    engine: AsyncEngine,
) -> None:
    session = SQLAlchemySession("external", engine=engine, create_tables=True)
    assert session.engine is engine
    await session.add_items([say("user", "hi")])
    assert await session.get_items() == [say("user", "hi")]


async def test_the_engine_property_cannot_be_reassigned(engine: AsyncEngine) -> None:
    session = SQLAlchemySession("read-only", engine=engine)
    with pytest.raises(AttributeError):
        session.engine = create_async_engine("sqlite+aiosqlite:///:memory:")  # type: ignore[misc]
    assert session.engine is engine


# -- failures roll back -------------------------------------------------------------------------


async def test_a_failed_add_items_stores_nothing_and_the_session_stays_usable(
    open_session: OpenSession,
) -> None:
    """The SDK raises ``TypeError`` from ``json.dumps``; ours is ``InvalidItemError``, a
    ``ValueError`` raised before any SQL (docs/sdk-parity.md)."""
    session = open_session("bad-item")
    with pytest.raises(InvalidItemError):
        await session.add_items([say("user", "fine"), {"role": "user", "content": object()}])
    assert await session.store.session_info("bad-item") is None
    await session.add_items([say("user", "after failure")])
    assert contents(await session.get_items()) == ["after failure"]


async def _drop_table_under(session: SQLAlchemySession, table: str) -> None:
    """Drop ``table`` from another connection, as the SDK's rollback tests do."""
    engine = create_async_engine(session.engine.url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            dialect = dialect_of(str(session.engine.url))
            if dialect == "postgresql":
                await conn.execute(text(f"DROP TABLE {table} CASCADE"))
            else:
                if dialect == "mariadb":
                    await conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
                else:
                    await conn.execute(text("PRAGMA foreign_keys = OFF"))
                await conn.execute(text(f"DROP TABLE {table}"))
    finally:
        await engine.dispose()


async def _another_writer_is_not_blocked(session: SQLAlchemySession, table: Any) -> None:
    """A second connection that refuses to wait writes to ``table`` at once."""
    url = session.engine.url
    dialect = dialect_of(str(url))
    if dialect == "sqlite":
        probe = sqlite3.connect(str(url.database), timeout=0)
        try:
            probe.execute(f"DELETE FROM {table.name}")
            probe.commit()
        finally:
            probe.close()
        return
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            if dialect == "postgresql":
                await conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            else:
                await conn.execute(text("SET SESSION innodb_lock_wait_timeout = 2"))
            await conn.execute(delete(table))
    finally:
        await engine.dispose()


async def test_a_clear_session_that_fails_half_way_keeps_every_item_and_holds_no_lock(
    shared_db_url: str,
) -> None:
    session = SQLAlchemySession.from_url("clear-fails", url=shared_db_url, create_tables=True)
    try:
        await session.add_items([say("user", "kept")])
        # Items are deleted first, then the session row: that second delete now fails.
        await _drop_table_under(session, session.store.sessions_table)
        with pytest.raises(DBAPIError):
            await session.clear_session()
        assert await raw_text(session) == ['{"role":"user","content":"kept"}']
        await _another_writer_is_not_blocked(session, session.store.messages)
    finally:
        # The next test's reset reflects the schema, which a dangling foreign key would break.
        await _drop_table_under(session, session.store.messages_table)
        await _drop_table_under(session, session.store.keys.name)
        await session.engine.dispose()


async def test_a_pop_item_that_fails_holds_no_lock(shared_db_url: str) -> None:
    session = SQLAlchemySession.from_url("pop-fails", url=shared_db_url, create_tables=True)
    try:
        await session.add_items([say("user", "kept")])
        await _drop_table_under(session, session.store.messages_table)
        with pytest.raises(DBAPIError):
            await session.pop_item()
        await _another_writer_is_not_blocked(session, session.store.sessions)
    finally:
        await session.engine.dispose()


# -- closing ------------------------------------------------------------------------------------


async def refused_as_closed(operation: Awaitable[Any]) -> None:
    """``operation`` raises the store's closed error (a ``RuntimeError``), within ``BOUND`` s."""
    try:
        await bounded(operation)
    except RuntimeError as exc:
        if isinstance(exc, AgentSessionStoreError) and "closed" in str(exc):
            return
        wrong: BaseException = exc
    except Exception as exc:  # reported below, without the driver's deep traceback
        wrong = exc
    else:
        pytest.fail("the operation ran on a closed store", pytrace=False)
    pytest.fail(
        f"a closed store raised {type(wrong).__name__}: {wrong}; expected its closed error",
        pytrace=False,
    )


async def test_every_operation_after_close_raises_runtime_error_and_writes_nothing(
    shared_db_url: str,
) -> None:
    session = SQLAlchemySession.from_url("closed", url=shared_db_url, create_tables=True)
    await session.add_items([say("user", "before close")])
    await bounded(session.store.close())
    try:
        await refused_as_closed(session.get_items())
        await refused_as_closed(session.add_items([say("user", "after close")]))
        await refused_as_closed(session.add_items([]))
        await refused_as_closed(session.pop_item())
        await refused_as_closed(session.clear_session())
    finally:
        async with SessionStore(shared_db_url) as fresh:
            assert await fresh.get_items("closed") == [say("user", "before close")]


async def test_closing_a_store_before_any_use_is_final(db_url: str) -> None:
    store = SessionStore(db_url)
    session = store.session("never-used")
    await bounded(store.close())
    await refused_as_closed(session.get_items())
    await refused_as_closed(session.add_items([]))


async def test_close_called_twice_and_concurrently_is_safe_and_stays_closed(
    db_url: str,
) -> None:
    store = SessionStore(db_url)
    await store.create_tables()
    session = store.session("twice")
    await session.add_items([say("user", "before close")])
    await bounded(asyncio.gather(store.close(), store.close()))
    await bounded(store.close())
    await refused_as_closed(session.get_items())
