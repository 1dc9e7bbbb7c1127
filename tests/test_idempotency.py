"""Idempotency keys of add_items: one copy per key, keys purged, lost commits settled (SQLite)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path as FilePath
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util import await_only

from agent_session_store import (
    ArgumentTypeError,
    CommitOutcomeUnknownError,
    InvalidArgumentError,
    SessionOwnershipError,
    SessionStore,
)
from agent_session_store._probe import Path


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SessionStore]:
    """A store with generated keys on, on every database (SQLite's default is off)."""
    async with SessionStore(db_url, idempotency_keys=True) as store:
        await store.create_tables()
        yield store


async def test_generated_keys_are_on_for_server_databases_and_off_for_sqlite(
    db_url: str,
) -> None:
    async with SessionStore(db_url) as store:
        await store.create_tables()
        await store.add_items("s", [{"n": 1}])
        await store.add_items("s", [{"n": 2}], idempotency_key="given")
        expected = 1 if db_url.startswith("sqlite") else 2  # a given key is kept everywhere
        assert (store.idempotency_keys, await _keys(store)) == (expected == 2, expected)


def _noop(*args: Any) -> None:
    """A listener that only looks: the store's calls then go through Core."""


@pytest.fixture(params=["driver", "core"])
def path(request: pytest.FixtureRequest, store: SessionStore) -> str:
    """Each test on the driver path and on Core (a listener on the store's engine)."""
    if request.param == "core":
        event.listen(store.engine.sync_engine, "before_cursor_execute", _noop)
        request.addfinalizer(
            lambda: event.remove(store.engine.sync_engine, "before_cursor_execute", _noop)
        )
    return str(request.param)


async def _keys(store: SessionStore) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(store.keys))).scalar())


async def test_the_same_caller_given_key_twice_stores_the_batch_once(
    store: SessionStore, path: str
) -> None:
    expected = Path.DRIVER if path == "driver" else Path.CORE
    assert await store._transport.path() is expected
    session = store.session("s")
    await session.add_items([{"n": 1}, {"n": 2}], idempotency_key="turn-1")

    await session.add_items([{"n": 1}, {"n": 2}], idempotency_key="turn-1")  # no error

    await session.add_items([{"n": 3}], idempotency_key="turn-2")
    assert await session.get_items() == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_the_same_key_in_two_sessions_stores_both_batches(store: SessionStore) -> None:
    await store.session("a").add_items([{"n": 1}], idempotency_key="k")
    await store.session("b").add_items([{"n": 2}], idempotency_key="k")
    await store.session("a").add_items([{"n": 9}], idempotency_key="K")  # keys are case-sensitive

    assert await store.session("a").get_items() == [{"n": 1}, {"n": 9}]
    assert await store.session("b").get_items() == [{"n": 2}]


async def test_every_add_items_without_a_key_records_one_of_its_own(store: SessionStore) -> None:
    session = store.session("s")
    for n in range(3):
        await session.add_items([{"n": n}, {"n": n}])

    assert await _keys(store) == 3
    assert len(await session.get_items()) == 6


async def test_a_store_with_generated_keys_off_writes_keys_only_when_given(
    db_url: str,
) -> None:
    async with SessionStore(db_url, idempotency_keys=False) as store:
        await store.create_tables()
        session = store.session("s")
        await session.add_items([{"n": 1}])
        await session.add_items([{"n": 2}], idempotency_key="given")
        await session.add_items([{"n": 2}], idempotency_key="given")

        assert await _keys(store) == 1
        assert await session.get_items() == [{"n": 1}, {"n": 2}]


async def test_concurrent_adds_with_distinct_keys_all_land_contiguously(
    store: SessionStore, path: str
) -> None:
    session = store.session("busy")

    async def writer(w: int) -> None:
        for b in range(5):
            batch = [{"w": w, "b": b, "i": i} for i in range(3)]
            await session.add_items(batch, idempotency_key=f"w{w}-b{b}")

    await asyncio.gather(*(writer(w) for w in range(8)))

    items = await session.get_items()
    assert len(items) == 8 * 5 * 3
    for start in range(0, len(items), 3):  # each batch whole and in order
        chunk = items[start : start + 3]
        assert [item["i"] for item in chunk] == [0, 1, 2]
        assert len({(item["w"], item["b"]) for item in chunk}) == 1
    assert await _keys(store) == 40


async def test_concurrent_adds_with_the_same_key_store_one_copy_and_all_succeed(
    store: SessionStore, path: str
) -> None:
    session = store.session("race")
    batch = [{"n": 1}, {"n": 2}]

    await asyncio.gather(
        *(session.add_items(batch, idempotency_key="same") for _ in range(8))
    )

    assert await session.get_items() == batch


async def test_an_owner_scoped_handle_stores_a_keyed_batch_once(
    store: SessionStore, path: str
) -> None:
    alice = store.session("owned", user_id="alice")
    await alice.add_items([{"n": 1}], idempotency_key="k1")
    await alice.add_items([{"n": 1}], idempotency_key="k1")
    assert await alice.get_items() == [{"n": 1}]

    with pytest.raises(SessionOwnershipError):
        await store.session("owned", user_id="mallory").add_items([{"n": 2}], idempotency_key="k2")
    # The refused call recorded no key: alice's own batch with that key is stored.
    await alice.add_items([{"n": 2}], idempotency_key="k2")
    assert await alice.get_items() == [{"n": 1}, {"n": 2}]


async def test_a_handle_with_a_ttl_stores_a_keyed_batch_once(store: SessionStore) -> None:
    session = store.session("fleeting", ttl=3600)
    await session.add_items([{"n": 1}], idempotency_key="k")
    await session.add_items([{"n": 1}], idempotency_key="k")
    assert await session.get_items() == [{"n": 1}]


@pytest.mark.parametrize(
    ("key", "error"),
    [("", InvalidArgumentError), ("x" * 256, InvalidArgumentError), (7, ArgumentTypeError)],
    ids=["empty", "too_long", "not_a_str"],
)
async def test_a_bad_idempotency_key_is_refused_before_anything_is_sent(
    store: SessionStore, key: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="idempotency_key"):
        await store.session("s").add_items([{"n": 1}], idempotency_key=key)
    assert await store.session_info("s") is None


async def test_purge_keys_deletes_old_keys_in_batches_and_keeps_new_ones(
    store: SessionStore,
) -> None:
    session = store.session("s")
    for n in range(5):
        await session.add_items([{"n": n}], idempotency_key=f"old-{n}")
    later = datetime.now(timezone.utc) + timedelta(seconds=1)

    assert await store.purge_keys(older_than=later, batch_size=2) == 5
    await session.add_items([{"n": 5}], idempotency_key="new")
    assert await store.purge_keys(older_than=timedelta(hours=1)) == 0

    assert await _keys(store) == 1
    # A purged key is forgotten: the same key stores its batch again; items are untouched.
    await session.add_items([{"n": 0}], idempotency_key="old-0")
    assert [item["n"] for item in await session.get_items()] == [0, 1, 2, 3, 4, 5, 0]


async def test_purge_keys_refuses_bad_arguments(store: SessionStore) -> None:
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        await store.purge_keys(older_than=timedelta(days=1), batch_size=0)
    with pytest.raises(InvalidArgumentError, match="naive"):
        await store.purge_keys(older_than=datetime.now())
    with pytest.raises(ArgumentTypeError):
        await store.purge_keys(older_than=timedelta(days=1), batch_size="10")  # type: ignore[arg-type]


async def test_clearing_or_deleting_a_session_takes_its_keys_with_it(store: SessionStore) -> None:
    await store.session("a").add_items([{"n": 1}], idempotency_key="k")
    await store.session("b").add_items([{"n": 1}], idempotency_key="k")
    await store.session("a").clear_session()
    assert await _keys(store) == 1

    await store.delete_sessions(older_than=datetime.now(timezone.utc) + timedelta(seconds=1))
    assert await _keys(store) == 0


# -- a lost commit on SQLite: a listener on the host's engine closes the connection ---------


def _close_after_commit(engine: Any, *, commit: bool) -> dict[str, int]:
    """At the next COMMIT: commit for real (or not), then close the sqlite3 connection.

    SQLAlchemy's own COMMIT then meets a closed database, a disconnect: the store cannot
    know whether the write was saved.
    """
    state = {"armed": 1, "faults": 0}

    def fault(conn: Any) -> None:
        if not state["armed"]:
            return
        state["armed"] = 0
        state["faults"] += 1
        raw = conn.connection.dbapi_connection
        if commit:
            raw.commit()
        lite = raw.driver_connection  # aiosqlite's connection; sqlite3's lives in its thread
        await_only(lite._execute(lite._connection.close))

    event.listen(engine.sync_engine, "commit", fault)
    return state


@pytest.mark.sqlite
@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not_committed"])
async def test_a_sqlite_connection_closed_at_commit_add_items_succeeds_and_stores_once(
    tmp_path: FilePath, caplog: pytest.LogCaptureFixture, committed: bool
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'lost.db'}")
    store = SessionStore(engine, idempotency_keys=True)
    await store.create_tables()
    await store.add_items("s", [{"n": 0}])
    state = _close_after_commit(engine, commit=committed)

    with caplog.at_level(logging.DEBUG, logger="agent_session_store"):
        await store.add_items("s", [{"n": 1}, {"n": 2}])

    assert state["faults"] == 1
    assert await store.get_items("s") == [{"n": 0}, {"n": 1}, {"n": 2}]
    refused = any("already stored" in rec.getMessage() for rec in caplog.records)
    assert refused is committed  # the resend was refused exactly when the first had committed
    await engine.dispose()


@pytest.mark.sqlite
async def test_a_lost_commit_of_a_store_without_keys_still_raises_commit_outcome_unknown(
    tmp_path: FilePath,
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'lost.db'}")
    store = SessionStore(engine, idempotency_keys=False)
    await store.create_tables()
    _close_after_commit(engine, commit=True)

    with pytest.raises(CommitOutcomeUnknownError, match="may or may not") as raised:
        await store.add_items("s", [{"n": 1}])

    assert raised.value.idempotency_key is None
    assert await store.get_items("s") == [{"n": 1}]
    await engine.dispose()
