"""The Session protocol, behaviour by behaviour, on every dialect."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_session_store import InvalidItemError, SessionSettings, SessionStore, SQLAlchemySession


def msg(i: int, role: str = "user") -> dict[str, Any]:
    return {"role": role, "content": f"message {i}"}


async def test_get_items_returns_all_items_in_insertion_order(store: SessionStore) -> None:
    session = store.session("s1")
    await session.add_items([msg(0), msg(1)])
    await session.add_items([msg(2)])
    await session.add_items([msg(3), msg(4), msg(5)])
    assert await session.get_items() == [msg(i) for i in range(6)]


async def test_get_items_on_unknown_session_is_empty(store: SessionStore) -> None:
    assert await store.session("nobody").get_items() == []
    assert await store.session("nobody").get_items(limit=3) == []


@pytest.mark.parametrize("limit", [1, 3, 10, 11, 50])
async def test_get_items_limit_returns_latest_n_in_chronological_order(
    store: SessionStore, limit: int
) -> None:
    session = store.session("s1")
    await session.add_items([msg(i) for i in range(11)])
    assert await session.get_items(limit=limit) == [msg(i) for i in range(11)][-limit:]


async def test_get_items_limit_zero_returns_empty_list(store: SessionStore) -> None:
    session = store.session("s1")
    await session.add_items([msg(0)])
    assert await session.get_items(limit=0) == []


async def test_session_settings_limit_applies_when_limit_is_none(store: SessionStore) -> None:
    session = store.session("s1", session_settings={"limit": 2})
    await session.add_items([msg(i) for i in range(5)])
    assert await session.get_items() == [msg(3), msg(4)]
    assert await session.get_items(limit=4) == [msg(i) for i in range(1, 5)]
    typed = store.session("s1", session_settings=SessionSettings(limit=1))
    assert await typed.get_items() == [msg(4)]


async def test_add_items_empty_list_writes_nothing(store: SessionStore) -> None:
    await store.session("s1").add_items([])
    async with store.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(store.sessions))).scalar() == 0


async def test_add_items_creates_session_row_and_touches_updated_at(store: SessionStore) -> None:
    session = store.session("s1")
    await session.add_items([msg(0)])
    async with store.engine.begin() as conn:
        row = (await conn.execute(select(store.sessions))).one()
        # Move the timestamps back so the touch is visible whatever the clock resolution.
        old = row.updated_at.replace(year=2000)
        await conn.execute(update(store.sessions).values(created_at=old, updated_at=old))
    await session.add_items([msg(1)])
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(store.sessions))).one()
    assert row.session_id == "s1"
    assert row.created_at.year == 2000
    assert row.updated_at.year > 2000
    assert row.updated_at.tzinfo is not None and row.updated_at.utcoffset().total_seconds() == 0


async def test_add_items_is_atomic_when_an_item_is_invalid(store: SessionStore) -> None:
    session = store.session("s1")
    await session.add_items([msg(0)])
    with pytest.raises(InvalidItemError, match=r"items\[1\]"):
        await session.add_items([msg(1), {"bad": float("nan")}, msg(2)])
    with pytest.raises(InvalidItemError):
        await session.add_items([{"bad": float("inf")}])
    with pytest.raises(InvalidItemError):
        await session.add_items([{"bad": object()}])
    with pytest.raises(TypeError, match="list of dicts"):
        await session.add_items(msg(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"items\[0\] must be a dict"):
        await session.add_items(["text"])
    assert await session.get_items() == [msg(0)]


async def test_add_items_leaves_nothing_when_the_transaction_fails_midway(
    store: SessionStore,
) -> None:
    """A failure after the session row was written rolls back the row and every item."""
    session = store.session("fresh")

    def fail_on_message_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Any statement that writes messages: on PostgreSQL the upsert and the insert are one.
        if "INSERT INTO" in statement.upper() and "message_data" in statement:
            raise RuntimeError("injected failure after the session upsert")

    sync_engine = store.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", fail_on_message_insert)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            await session.add_items([msg(0), msg(1)])
    finally:
        event.remove(sync_engine, "before_cursor_execute", fail_on_message_insert)
    async with store.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(store.sessions))).scalar() == 0
    assert await session.get_items() == []
    await session.add_items([msg(2)])
    assert await session.get_items() == [msg(2)]


async def test_nul_characters_inside_items_round_trip_as_data(store: SessionStore) -> None:
    session = store.session("s1")
    await session.add_items([{"text": "a\x00b"}])
    assert await session.get_items() == [{"text": "a\x00b"}]


async def test_pop_item_removes_and_returns_newest(store: SessionStore) -> None:
    session = store.session("s1")
    await session.add_items([msg(0), msg(1), msg(2)])
    assert await session.pop_item() == msg(2)
    assert await session.pop_item() == msg(1)
    assert await session.get_items() == [msg(0)]
    assert await session.pop_item() == msg(0)
    assert await session.pop_item() is None
    await session.add_items([msg(9)])
    assert await session.get_items() == [msg(9)]


async def test_pop_item_on_empty_or_unknown_session_returns_none(store: SessionStore) -> None:
    assert await store.session("nobody").pop_item() is None


async def test_pop_item_returns_each_item_once_under_concurrent_poppers(
    store: SessionStore,
) -> None:
    session = store.session("s1")
    items = [msg(i) for i in range(60)]
    await session.add_items(items)
    poppers = [store.session("s1") for _ in range(12)]

    async def drain(s: SQLAlchemySession) -> list[Any]:
        got = []
        while (item := await s.pop_item()) is not None:
            got.append(item)
        return got

    results = await asyncio.gather(*(drain(p) for p in poppers))
    popped = [item for got in results for item in got]
    assert sorted(json.dumps(i) for i in popped) == sorted(json.dumps(i) for i in items)
    for got in results:  # each popper sees newest-first order
        indexes = [int(i["content"].split()[-1]) for i in got]
        assert indexes == sorted(indexes, reverse=True)
    assert await session.get_items() == []


async def test_clear_session_deletes_session_row_and_items(store: SessionStore) -> None:
    keep, gone = store.session("keep"), store.session("gone")
    await keep.add_items([msg(0)])
    await gone.add_items([msg(1), msg(2)])
    await gone.clear_session()
    assert await gone.get_items() == []
    assert await keep.get_items() == [msg(0)]
    async with store.engine.connect() as conn:
        ids = (await conn.execute(select(store.sessions.c.session_id))).scalars().all()
        left = (await conn.execute(select(store.messages.c.session_id))).scalars().all()
    assert ids == ["keep"] and left == ["keep"]
    await store.session("never-existed").clear_session()


async def test_undecodable_rows_are_skipped_with_a_warning_and_limit_counts_valid_items(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    session = store.session("s1")
    await session.add_items([msg(0), msg(1)])
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(store.messages),
            [{"session_id": "s1", "message_data": "{not json"} for _ in range(3)],
        )
    await session.add_items([msg(2)])
    with caplog.at_level(logging.WARNING, logger="agent_session_store"):
        assert await session.get_items() == [msg(0), msg(1), msg(2)]
        assert await session.get_items(limit=2) == [msg(1), msg(2)]
        caplog.clear()
        assert await session.get_items(limit=3) == [msg(0), msg(1), msg(2)]
        assert len(caplog.records) == 3  # each corrupt row is reported once per read
        assert await session.pop_item() == msg(2)
        assert await session.pop_item() == msg(1)  # skips (and removes) the corrupt rows
    assert "not valid JSON" in caplog.text
    assert await session.get_items() == [msg(0)]


async def test_unicode_emoji_and_sql_metacharacters_round_trip(store: SessionStore) -> None:
    session_id = "üser-😀-'; DROP TABLE agent_messages; --"
    session = store.session(session_id)
    items = [
        {"content": "héllo wörld 😀👍🏽 中文 العربية \u2028 \\ \" ' %s %(x)s ? :name"},
        {"nested": {"list": [1, 2.5, None, True, "𝄞"]}, "empty": {}},
    ]
    await session.add_items(items)
    assert await store.session(session_id).get_items() == items


async def test_session_ids_are_case_sensitive(store: SessionStore) -> None:
    await store.session("Alice").add_items([msg(0)])
    await store.session("alice").add_items([msg(1)])
    assert await store.session("Alice").get_items() == [msg(0)]
    assert await store.session("alice").get_items() == [msg(1)]


async def test_five_megabyte_item_round_trips(store: SessionStore) -> None:
    big = {"type": "function_call_output", "output": "x" * (5 * 1024 * 1024)}
    session = store.session("big")
    await session.add_items([msg(0), big])
    assert await session.get_items() == [msg(0), big]
    assert await session.pop_item() == big


async def test_many_sessions_are_isolated(store: SessionStore) -> None:
    sessions = [store.session(f"user-{n}") for n in range(50)]
    await asyncio.gather(*(s.add_items([msg(n), msg(n + 1000)]) for n, s in enumerate(sessions)))
    for n, s in enumerate(sessions):
        assert await s.get_items() == [msg(n), msg(n + 1000)]
    await sessions[7].clear_session()
    assert await sessions[7].get_items() == []
    assert await sessions[8].get_items() == [msg(8), msg(1008)]


async def test_concurrent_add_items_keep_each_batch_contiguous(store: SessionStore) -> None:
    async def writer(w: int) -> None:
        session = store.session("shared")
        for b in range(5):
            await session.add_items([{"w": w, "b": b, "i": i} for i in range(4)])

    await asyncio.gather(*(writer(w) for w in range(8)))
    items = await store.session("shared").get_items()
    assert len(items) == 8 * 5 * 4
    for start in range(0, len(items), 4):
        batch = items[start : start + 4]
        assert [i["i"] for i in batch] == [0, 1, 2, 3]
        assert len({(i["w"], i["b"]) for i in batch}) == 1
    for w in range(8):
        assert [i["b"] for i in items if i["w"] == w and i["i"] == 0] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("session_id", "error"),
    [("", ValueError), ("x" * 256, ValueError), (42, TypeError), (None, TypeError),
     ("a\x00b", ValueError)],
)
def test_bad_session_id_is_rejected_at_construction(
    store: SessionStore, session_id: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.session(session_id)


async def test_session_id_of_255_characters_is_accepted(store: SessionStore) -> None:
    session = store.session("é" * 255)
    await session.add_items([msg(0)])
    assert await session.get_items() == [msg(0)]


@pytest.mark.parametrize(
    ("limit", "error"), [(-1, ValueError), (True, TypeError), ("3", TypeError)]
)
async def test_bad_limit_is_rejected(
    store: SessionStore, limit: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await store.session("s1").get_items(limit=limit)


async def test_sdk_style_constructor_with_create_tables(engine: AsyncEngine) -> None:
    session = SQLAlchemySession("s1", engine=engine, create_tables=True)
    await session.add_items([msg(0)])
    other = SQLAlchemySession("s2", engine=engine, create_tables=True)
    assert other.store is session.store  # one store per engine and table names
    assert session.engine is engine
    assert await session.get_items() == [msg(0)]
    renamed = SQLAlchemySession(
        "s1", engine=engine, create_tables=True, sessions_table="t_s", messages_table="t_m"
    )
    assert renamed.store is not session.store
    assert await renamed.get_items() == []


async def test_from_url_creates_an_engine_and_tables(db_url: str) -> None:
    session = SQLAlchemySession.from_url(
        "s1", url=db_url, create_tables=True, session_settings={"limit": 1}
    )
    try:
        await session.add_items([msg(0), msg(1)])
        assert await session.get_items() == [msg(1)]
    finally:
        await session.engine.dispose()


def test_session_is_the_sdk_session_protocol(store: SessionStore) -> None:
    agents_session = pytest.importorskip("agents.memory.session")
    assert isinstance(store.session("s1"), agents_session.Session)


def test_the_package_never_imports_the_sdk_itself() -> None:
    import subprocess
    import sys

    code = (
        "import sys, agent_session_store as a\n"
        "s = a.SessionStore('sqlite+aiosqlite://').session('x', session_settings={'limit': 2})\n"
        "assert s.session_settings.limit == 2\n"
        "print(sorted(m for m in sys.modules if m == 'agents' or m.startswith('agents.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
