"""The driver fast path: taken unless statements are observed, and the same behaviour as Core.

The store runs its hot statements (get_items, add_items, pop_item, clear_session) straight on
the async driver's connection unless something watches statements (engine event listeners,
``echo``, the SQL logger), when it goes through ``AsyncConnection.execute`` instead. These
tests check the switch both ways and run the store's core behaviours on both paths, against
real databases only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import QueuePool

from agent_session_store import SessionStore, _driver
from agent_session_store._probe import Path

#: The engine events whose listeners must see every statement, so switch the fast path off.
#: Spelled out here, not imported from _driver, so that dropping one there fails this test.
STATEMENT_EVENTS = (
    "before_cursor_execute",
    "after_cursor_execute",
    "before_execute",
    "after_execute",
    "begin",
    "commit",
    "rollback",
)
TIMEOUT = 60  # seconds; a hang fails the test instead of blocking the run


def _on_driver(store: SessionStore) -> bool:
    """The probe sends an operation starting now to the driver executor."""
    return store._transport.probe.path() is Path.DRIVER


def _memory(url: str) -> bool:
    return url.endswith(":memory:")


def _one_connection(url: str) -> dict[str, Any]:
    """Engine arguments for a pool of exactly one connection (``:memory:`` already has one)."""
    return {} if _memory(url) else {"pool_size": 1, "max_overflow": 0}


def _other_store(url: str, store: SessionStore) -> AbstractAsyncContextManager[SessionStore]:
    """A second store, on its own engine: it shares only committed data with ``store``.

    A ``:memory:`` database exists only inside its one connection, so there the second store
    has to share ``store``'s engine (and these checks reduce to reading one's own writes).
    """
    if _memory(url):
        return nullcontext(SessionStore(store.engine))
    return SessionStore(url)


def _observe(store: SessionStore) -> tuple[list[str], Callable[[], None]]:
    """Attach a ``before_cursor_execute`` listener to the store's engine.

    Returns the statements it sees, and a function that removes it.
    """
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engine = store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", listener)
    return seen, lambda: event.remove(engine, "before_cursor_execute", listener)


@pytest.fixture
def core_executions(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Statements passed to ``AsyncConnection.execute``, SQLAlchemy's path, in this test.

    A pass-through spy: every call still runs unchanged on the real database.
    """
    calls: list[Any] = []
    original = AsyncConnection.execute

    async def execute(self: AsyncConnection, statement: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(statement)
        return await original(self, statement, *args, **kwargs)

    monkeypatch.setattr(AsyncConnection, "execute", execute)
    return calls


def _off_the_fast_path(store: SessionStore, calls: list[Any]) -> list[Any]:
    """The statements in ``calls`` that the driver path should not have sent through Core.

    On PostgreSQL the fast path runs only single-statement writes (asyncpg commits each by
    itself); clear_session's two DELETEs keep a Core transaction (``SessionStore._writing``).
    """
    kept: set[int] = set()
    if store.engine.dialect.name == "postgresql":
        st = store._statements
        kept = {id(st.delete_messages.core), id(st.delete_session.core)}
    return [call for call in calls if id(call) not in kept]


async def _exercise(store: SessionStore, session_id: str) -> None:
    """Every hot operation once, checking each result."""
    await store.add_items(session_id, [{"n": 1}, {"n": 2}])
    assert await store.get_items(session_id) == [{"n": 1}, {"n": 2}]
    assert await store.get_items(session_id, limit=1) == [{"n": 2}]
    assert await store.pop_item(session_id) == {"n": 2}
    await store.clear_session(session_id)
    assert await store.get_items(session_id) == []
    assert await store.pop_item(session_id) is None


# -- a. the fast path is the default, and is given up while observed -----------------------


async def test_hot_operations_bypass_sqlalchemy_execution_unless_a_listener_observes_them(
    db_url: str, core_executions: list[Any]
) -> None:
    async with SessionStore(db_url) as store:
        await store.create_tables()
        assert _on_driver(store)

        core_executions.clear()
        await _exercise(store, "plain")
        off = _off_the_fast_path(store, core_executions)
        assert off == [], "an unobserved store ran statements through SQLAlchemy"

        seen, stop_observing = _observe(store)
        try:
            assert not _on_driver(store)
            await _exercise(store, "observed")
            # The listener saw the store's own statements, and they went through SQLAlchemy.
            assert core_executions
            sql = [s.lstrip().upper() for s in seen if "AGENT_MESSAGES" in s.upper()]
            assert any(s.startswith("SELECT") for s in sql), seen
            assert any("INSERT" in s for s in sql), seen
            assert any(s.startswith("DELETE") for s in sql), seen
        finally:
            stop_observing()

        assert _on_driver(store)
        core_executions.clear()
        before = len(seen)
        await _exercise(store, "again")
        off = _off_the_fast_path(store, core_executions)
        assert off == [], "the fast path did not come back once the listener left"
        assert len(seen) == before


async def test_every_statement_or_transaction_listener_and_sql_logging_switch_the_fast_path_off(
    db_url: str,
) -> None:
    async with SessionStore(db_url) as store:
        engine = store.engine.sync_engine
        assert _on_driver(store)

        def listener(*args: Any, **kwargs: Any) -> None:
            return None

        for name in STATEMENT_EVENTS:
            event.listen(engine, name, listener)
            try:
                assert not _on_driver(store), f"a {name!r} listener left the fast path on"
            finally:
                event.remove(engine, name, listener)
            assert _on_driver(store), f"removing the {name!r} listener did not restore it"

        # handle_error lives on the dialect; a listener on the Engine class covers every engine.
        targets: list[tuple[Any, str]] = [
            (engine, "handle_error"),
            (Engine, "before_cursor_execute"),
        ]
        for target, name in targets:
            event.listen(target, name, listener)
            try:
                assert not _on_driver(store), f"a {name!r} listener on {target!r}"
            finally:
                event.remove(target, name, listener)
            assert _on_driver(store)

        _assert_sql_logging_switches_it_off(store, "sqlalchemy.engine.Engine")

    # An engine with a logging_name logs through its own child logger.
    async with SessionStore(db_url, engine_kwargs={"logging_name": "chat"}) as named:
        _assert_sql_logging_switches_it_off(named, "sqlalchemy.engine.Engine.chat")


def _assert_sql_logging_switches_it_off(store: SessionStore, logger_name: str) -> None:
    sql_log = logging.getLogger(logger_name)
    level = sql_log.level
    assert _on_driver(store)
    sql_log.setLevel(logging.INFO)
    try:
        assert not _on_driver(store), f"{logger_name} at INFO left the fast path on"
    finally:
        sql_log.setLevel(level)
    assert _on_driver(store)


async def test_an_engine_with_echo_takes_the_core_path_and_logs_every_statement(
    db_url: str, core_executions: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with SessionStore(db_url, engine_kwargs={"echo": True}) as store:
        assert not _on_driver(store)
        await store.create_tables()
        core_executions.clear()
        await _exercise(store, "echoed")
        assert core_executions
        logged = [r.getMessage().upper() for r in caplog.records]
        assert any(m.lstrip().startswith("SELECT") and "AGENT_MESSAGES" in m for m in logged)
    async with SessionStore(db_url) as plain:  # echo is per engine: others keep the fast path
        assert _on_driver(plain)


# -- b. the same behaviour on both paths ----------------------------------------------------


@pytest.fixture(params=["driver", "core"])
def path(request: pytest.FixtureRequest) -> str:
    """``driver``: the fast path; ``core``: a no-op statement listener forces SQLAlchemy's."""
    return str(request.param)


@pytest.fixture
async def on_path(
    db_url: str, path: str, core_executions: list[Any]
) -> AsyncIterator[SessionStore]:
    """A store with its tables, on the path under test; afterwards, checks it stayed there."""
    async with SessionStore(db_url) as store:
        seen = _observe(store)[0] if path == "core" else []
        await store.create_tables()
        core_executions.clear()
        yield store
        if path == "core":
            assert not _on_driver(store)
            assert core_executions and seen, "the core path ran no statement through SQLAlchemy"
        else:
            assert _on_driver(store)
            off = _off_the_fast_path(store, core_executions)
            assert off == [], "the driver path ran statements through SQLAlchemy"


async def test_add_items_then_get_items_returns_all_or_the_latest_n_in_order(
    on_path: SessionStore,
) -> None:
    store = on_path
    items = [{"role": "user", "n": i} for i in range(10)]
    await store.add_items("s", items[:4])
    await store.add_items("s", items[4:])
    await store.add_items("neighbour", [{"n": -1}])

    assert await store.get_items("s") == items
    assert await store.get_items("s", limit=1) == items[-1:]
    assert await store.get_items("s", limit=3) == items[-3:]
    assert await store.get_items("s", limit=10) == items
    assert await store.get_items("s", limit=100) == items
    assert await store.get_items("s", limit=0) == []
    assert await store.get_items("missing") == []
    assert await store.get_items("missing", limit=5) == []


async def test_pop_item_returns_the_newest_first_then_none_once_empty(
    on_path: SessionStore,
) -> None:
    store = on_path
    await store.add_items("s", [{"n": 1}, {"n": 2}])
    await store.add_items("s", [{"n": 3}])
    await store.add_items("neighbour", [{"n": -1}])

    assert [await store.pop_item("s") for _ in range(3)] == [{"n": 3}, {"n": 2}, {"n": 1}]
    assert await store.pop_item("s") is None
    assert await store.pop_item("never-written") is None
    assert await store.get_items("s") == []
    assert await store.get_items("neighbour") == [{"n": -1}]
    await store.add_items("s", [{"n": 4}])  # a popped-empty session takes new items
    assert await store.pop_item("s") == {"n": 4}


async def test_clear_session_removes_only_that_session_and_it_can_be_written_again(
    on_path: SessionStore,
) -> None:
    store = on_path
    await store.add_items("s", [{"n": 1}, {"n": 2}])
    await store.add_items("neighbour", [{"n": -1}])

    await store.clear_session("s")
    assert await store.get_items("s") == []
    assert await store.get_items("s", limit=2) == []
    assert await store.pop_item("s") is None
    assert await store.get_items("neighbour") == [{"n": -1}]
    await store.clear_session("s")  # clearing an absent session is a no-op
    await store.clear_session("never-written")
    await store.add_items("s", [{"n": 3}])
    assert await store.get_items("s") == [{"n": 3}]


WRITERS = 8
BATCHES = 5
BATCH_SIZE = 3


async def test_concurrent_add_items_batches_stay_whole_contiguous_and_in_writer_order(
    on_path: SessionStore,
) -> None:
    store = on_path

    async def writer(w: int) -> None:
        for b in range(BATCHES):
            await store.add_items("shared", [{"w": w, "b": b, "i": i} for i in range(BATCH_SIZE)])

    await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(WRITERS))), TIMEOUT)

    items = await store.get_items("shared")
    assert len(items) == WRITERS * BATCHES * BATCH_SIZE
    assert len({(i["w"], i["b"], i["i"]) for i in items}) == len(items), "an item was duplicated"
    for start in range(0, len(items), BATCH_SIZE):
        batch = items[start : start + BATCH_SIZE]
        assert len({(i["w"], i["b"]) for i in batch}) == 1, f"a batch was split: {batch}"
        assert [i["i"] for i in batch] == list(range(BATCH_SIZE))
    for w in range(WRITERS):
        assert [i["b"] for i in items if i["w"] == w and i["i"] == 0] == list(range(BATCHES))


POPPERS = 8
TO_POP = 40


async def test_concurrent_poppers_return_every_item_exactly_once(on_path: SessionStore) -> None:
    store = on_path
    items = [{"n": n} for n in range(TO_POP)]
    await store.add_items("popped", items[:25])
    await store.add_items("popped", items[25:])

    async def popper() -> list[int]:
        taken: list[int] = []
        while (item := await store.pop_item("popped")) is not None:
            taken.append(item["n"])
        return taken

    results = await asyncio.wait_for(asyncio.gather(*(popper() for _ in range(POPPERS))), TIMEOUT)

    counts = Counter(n for taken in results for n in taken)
    assert sorted(counts) == list(range(TO_POP)), "an item was lost"
    assert set(counts.values()) == {1}, f"popped twice: {[n for n, c in counts.items() if c > 1]}"
    for taken in results:  # each pop took the newest item left, so each popper's list falls
        assert taken == sorted(taken, reverse=True)
    assert await store.get_items("popped") == []


async def test_add_items_of_one_item_and_of_a_hundred_items(on_path: SessionStore) -> None:
    store = on_path
    one = [{"role": "user", "content": "only"}]
    hundred = [{"role": "assistant", "content": f"part {i}", "i": i} for i in range(100)]

    await store.add_items("one", one)
    await store.add_items("hundred", hundred)
    await store.add_items("both", one)
    await store.add_items("both", hundred)

    assert await store.get_items("one") == one
    assert await store.get_items("hundred") == hundred
    assert await store.get_items("hundred", limit=99) == hundred[1:]
    assert await store.get_items("both") == one + hundred
    assert await store.get_items("both", limit=101) == one + hundred
    assert await store.pop_item("hundred") == hundred[-1]
    assert await store.pop_item("one") == one[0]


UNICODE_ITEMS = [
    {"role": "user", "content": "héllo wörld — naïve café"},
    {"role": "user", "content": "emoji 🚀🎉👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵"},
    {"role": "assistant", "content": "中文 日本語 한국어 עברית العربية"},
    {"content": "combining: e\u0301 a\u030a, zero width:\u200b\u200d"},
    {"content": "quotes \" ' ` and backslashes \\ \\\\ and % _ ?"},
    {"content": "control characters \x00 \x01 \t \n \r\n"},
    {"content": "a lone surrogate \ud83d cut from an emoji pair"},
    {"😀 key": ["nested", {"deep": "ꙮ"}], "n": 1.5, "t": True, "none": None},
]


async def test_unicode_and_emoji_items_and_session_ids_round_trip_unchanged(
    on_path: SessionStore,
) -> None:
    store = on_path
    session_id = "sessión-🚀-会话"
    await store.add_items(session_id, UNICODE_ITEMS[:3])
    await store.add_items(session_id, UNICODE_ITEMS[3:])

    assert await store.get_items(session_id) == UNICODE_ITEMS
    assert await store.get_items(session_id, limit=2) == UNICODE_ITEMS[-2:]
    assert await store.pop_item(session_id) == UNICODE_ITEMS[-1]
    assert await store.get_items(session_id) == UNICODE_ITEMS[:-1]
    await store.clear_session(session_id)
    assert await store.get_items(session_id) == []


# -- c. a reused connection never reads a stale snapshot ------------------------------------


@pytest.fixture(params=["owned", "borrowed"])
def engine_of(request: pytest.FixtureRequest) -> str:
    """``owned``: the store makes its engine (on MySQL/MariaDB with an autocommit read pool);
    ``borrowed``: it is given one (one pool, reads end their transaction with ROLLBACK)."""
    return str(request.param)


async def test_a_read_on_a_reused_connection_sees_writes_made_since_through_another_engine(
    db_url: str, path: str, engine_of: str
) -> None:
    if engine_of == "owned":
        reader = SessionStore(db_url, engine_kwargs=_one_connection(db_url))
    else:
        kwargs = {"pool_reset_on_return": None, **_one_connection(db_url)}
        reader = SessionStore(create_async_engine(db_url, **kwargs))
    mysql = reader.engine.dialect.name in ("mysql", "mariadb")
    assert (reader._read_engine is not None) == (mysql and engine_of == "owned")
    async with reader:
        if path == "core":
            _observe(reader)
        used: set[int] = set()

        def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
            used.add(id(dbapi_connection))

        event.listen(reader.engine.sync_engine, "checkout", on_checkout)
        await reader.create_tables()
        assert (not _on_driver(reader)) == (path == "core")
        async with _other_store(db_url, reader) as writer:
            await reader.add_items("s", [{"n": 1}])
            assert await reader.get_items("s") == [{"n": 1}]
            assert await reader.get_items("s", limit=1) == [{"n": 1}]
            assert await reader.get_items("empty") == []

            await writer.add_items("s", [{"n": 2}])
            await writer.add_items("empty", [{"n": 3}])
            assert await reader.get_items("s") == [{"n": 1}, {"n": 2}]
            assert await reader.get_items("s", limit=1) == [{"n": 2}]
            assert await reader.get_items("empty") == [{"n": 3}]

            assert await writer.pop_item("s") == {"n": 2}
            await writer.clear_session("empty")
            assert await reader.get_items("s", limit=5) == [{"n": 1}]
            assert await reader.get_items("empty") == []
            assert await reader.pop_item("s") == {"n": 1}
        # The premise: every call of the reader used the same connection.
        assert len(used) == 1
    if engine_of == "borrowed":
        await reader.engine.dispose()


# -- d. a pool listener that runs a statement does not swallow writes ----------------------


def _run_a_statement(ran: list[str]) -> Callable[..., None]:
    """A pool listener running ``SELECT 1``, which opens a transaction on some drivers."""

    def listener(dbapi_connection: Any, *args: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        ran.append("SELECT 1")

    return listener


@pytest.mark.parametrize("pool_event", ["connect", "checkout"])
async def test_a_pool_listener_running_a_statement_does_not_swallow_the_next_write(
    db_url: str, path: str, pool_event: str
) -> None:
    ran: list[str] = []

    @asynccontextmanager
    async def fresh_writer(base: SessionStore) -> AsyncIterator[SessionStore]:
        """A store whose first connection is made, listener first, by the write under test."""
        if _memory(db_url):  # the one connection of :memory: already exists; share it
            writer = SessionStore(base.engine)
        else:
            writer = SessionStore(db_url, engine_kwargs=_one_connection(db_url))
            event.listen(writer.engine.sync_engine, pool_event, _run_a_statement(ran))
            if path == "core":
                _observe(writer)
        async with writer:
            yield writer

    base = SessionStore(db_url)
    if _memory(db_url):
        event.listen(base.engine.sync_engine, pool_event, _run_a_statement(ran))
        if path == "core":
            _observe(base)
    async with base:
        await base.create_tables()
        async with _other_store(db_url, base) as reader:
            async with fresh_writer(base) as writer:
                assert (not _on_driver(writer)) == (path == "core")
                await writer.add_items("s", [{"n": 1}, {"n": 2}])
                assert await reader.get_items("s") == [{"n": 1}, {"n": 2}]
            # Closing the writer's engine would roll back anything left uncommitted.
            assert await reader.get_items("s") == [{"n": 1}, {"n": 2}]

            async with fresh_writer(base) as writer:
                assert await writer.pop_item("s") == {"n": 2}
            assert await reader.get_items("s") == [{"n": 1}]

            async with fresh_writer(base) as writer:
                await writer.clear_session("s")
            assert await reader.get_items("s") == []

            async with fresh_writer(base) as writer:
                await writer.add_items("s", [{"n": 3}])
                assert await writer.get_items("s") == [{"n": 3}]
                await writer.add_items("s", [{"n": 4}])
            assert await reader.get_items("s") == [{"n": 3}, {"n": 4}]
    assert ran, f"the {pool_event} listener never ran"


async def test_store_engines_check_connections_out_without_a_greenlet_unless_the_pool_needs_io(
    db_url: str,
) -> None:
    # Relies on SQLAlchemy pool attributes that are not public: this fails if they change.
    async with SessionStore(db_url) as store:
        await store.create_tables()
        await store.session("quick").add_items([{"n": 1}])
        assert _driver.quick_pool(store.engine.sync_engine.pool)
    needs_io: list[dict[str, Any]] = [
        {"pool_pre_ping": True},
        {"pool_recycle": 3600},
        {"pool_reset_on_return": "rollback"},
    ]
    for io in needs_io:
        async with SessionStore(db_url, engine_kwargs=io) as store:
            assert not _driver.quick_pool(store.engine.sync_engine.pool), io
            await store.create_tables()
            await store.session("slow").add_items([{"n": 2}])
            assert await store.session("slow").get_items() == [{"n": 2}]
            await store.session("slow").clear_session()


async def test_disposing_the_store_engine_closes_the_read_pool_too(db_url: str) -> None:
    store = SessionStore(db_url)
    await store.create_tables()
    await store.add_items("d", [{"n": 1}])
    assert await store.get_items("d") == [{"n": 1}]
    read = store._read_engine
    if read is None:  # SQLite and PostgreSQL read on the one pool
        assert store.engine.dialect.name not in ("mysql", "mariadb")
        await store.close()
        return
    pool = read.sync_engine.pool
    assert isinstance(pool, QueuePool) and pool.checkedin() == 1
    # What the SDK's docs tell users to do with session.engine: it must close both pools.
    await store.engine.dispose()
    assert pool.checkedin() == 0
    assert await store.get_items("d") == [{"n": 1}]  # and the store still works
    await store.clear_session("d")
    await store.close()
