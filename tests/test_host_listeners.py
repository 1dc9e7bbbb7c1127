"""The host's event listeners and ORM on the engine the store runs on.

A host's listeners (auditing, tracing, tenant guards, error translation) must see each of the
store's statements exactly as they see the host's own, and a host ORM ``AsyncSession`` on the
same engine must read and write the store's rows as ordinary ORM rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import String, event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agent_session_store import SessionStore

from .host_engines import core_items

ITEMS = [{"role": "user", "content": f"m{i}"} for i in range(3)]

#: (operation, a fragment every statement log of it contains)
OPERATIONS: list[tuple[str, Callable[[SessionStore], Any], str]] = [
    ("add_items", lambda s: s.add_items("s", ITEMS), "INSERT INTO agent_messages"),
    ("get_items", lambda s: s.get_items("s"), "FROM agent_messages"),
    ("get_items(limit)", lambda s: s.get_items("s", limit=1), "FROM agent_messages"),
    ("pop_item", lambda s: s.pop_item("s"), "agent_messages"),
    ("clear_session", lambda s: s.clear_session("s"), "DELETE FROM agent_messages"),
]
WRITES = {"add_items", "pop_item", "clear_session"}


def _sql(statement: Any) -> str:
    return " ".join(str(statement).split())


def _listen(engine: AsyncEngine, kind: str, seen: list[str]) -> None:
    """Attach a host listener of ``kind`` that notes what it sees in ``seen``."""
    target = engine.sync_engine
    if kind in ("before_cursor_execute", "after_cursor_execute"):

        def on_cursor(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(_sql(statement))

        event.listen(target, kind, on_cursor)
    elif kind == "before_execute":

        def on_execute(conn: Any, clause: Any, *args: Any) -> None:
            seen.append(_sql(clause))

        event.listen(target, kind, on_execute)
    elif kind == "do_execute":

        # A tracing hook that runs each statement itself, one at a time or as a batch.
        def do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
            seen.append(_sql(statement))
            cursor.execute(statement, parameters)
            return True

        def do_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
            seen.append(_sql(statement))
            cursor.executemany(statement, parameters)
            return True

        event.listen(target, "do_execute", do_execute)
        event.listen(target, "do_executemany", do_executemany)
    else:  # begin / commit: one entry per transaction boundary

        def on_boundary(conn: Any) -> None:
            seen.append(kind)

        event.listen(target, kind, on_boundary)


@pytest.mark.parametrize(
    "kind", ["before_cursor_execute", "after_cursor_execute", "before_execute", "do_execute"]
)
async def test_statement_listeners_see_every_operations_statement(
    engine: AsyncEngine, kind: str
) -> None:
    store = SessionStore(engine)
    await store.create_tables()
    seen: list[str] = []
    _listen(engine, kind, seen)
    for name, call, fragment in OPERATIONS:
        seen.clear()
        await call(store)
        assert any(fragment in sql for sql in seen), f"{kind} did not see {name}: {seen}"
    assert await core_items(engine, None, "s") == []


@pytest.mark.parametrize("kind", ["begin", "commit"])
async def test_transaction_listeners_see_every_write(engine: AsyncEngine, kind: str) -> None:
    store = SessionStore(engine)
    await store.create_tables()
    seen: list[str] = []
    _listen(engine, kind, seen)
    for name, call, _ in OPERATIONS:
        seen.clear()
        await call(store)
        if name in WRITES:
            assert seen, f"no {kind} event for {name}"


class HostError(Exception):
    """What a host's handle_error hook turns database errors into."""


async def test_handle_error_sees_each_failing_statement_and_its_exception_is_raised(
    engine: AsyncEngine,
) -> None:
    """No tables: every operation fails, and the host's hook decides what is raised, as in Core."""
    store = SessionStore(engine)
    seen: list[str] = []

    def translate(context: Any) -> None:
        seen.append(_sql(context.statement))
        raise HostError("translated by the host") from context.original_exception

    event.listen(engine.sync_engine, "handle_error", translate)
    for name, call, _ in OPERATIONS:
        seen.clear()
        with pytest.raises(HostError):
            await call(store)
        assert any("agent_" in sql for sql in seen), f"handle_error missed {name}: {seen}"


# -- the host's ORM on the same engine ------------------------------------------------------


class HostBase(DeclarativeBase):
    pass


class Note(HostBase):
    __tablename__ = "host_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(100))


async def test_host_orm_and_store_share_one_engine(engine: AsyncEngine) -> None:
    store = SessionStore(engine)
    await store.create_tables()
    async with engine.begin() as conn:
        await conn.run_sync(HostBase.metadata.create_all)
    message = store.AgentMessage

    async with AsyncSession(engine) as orm:
        orm.add(Note(text="before"))
        await orm.commit()
        await store.add_items("chat", ITEMS)
        # The host's ORM reads the store's rows, in the store's order.
        rows = (await orm.scalars(select(message).order_by(message.id))).all()
        assert [json.loads(row.message_data) for row in rows] == ITEMS
        # ... and writes rows the store reads back as items.
        orm.add(message(session_id="chat", message_data=json.dumps({"from": "orm"})))
        await orm.commit()
    assert await store.get_items("chat") == [*ITEMS, {"from": "orm"}]
    assert await store.pop_item("chat") == {"from": "orm"}
    async with AsyncSession(engine) as orm:
        assert [n.text for n in (await orm.scalars(select(Note))).all()] == ["before"]
