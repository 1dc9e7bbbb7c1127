"""Connections cut at the commit point of add_items: the call succeeds, the batch is there once.

A proxy between the store and the server (``cutting_proxy``) cuts the connection either
after the server committed (its acknowledgement is dropped) or before the server heard the
write. Either way the outcome is unknown to the client, and the store settles it with the
batch's idempotency key: sent again, the write is stored (first attempt never committed) or
refused by the keys table's primary key (it did). On both executors (the driver path, and
Core under an engine listener), on PostgreSQL and MariaDB.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from agent_session_store import CommitOutcomeUnknownError, SessionStore, _idempotency
from agent_session_store._probe import Path

from ..conftest import ALL_KINDS
from .cutting_proxy import CuttingProxy
from .figures import Figures, database_of

SERVERS = [p for p in ALL_KINDS if p.values[0] in ("postgresql", "mariadb")]
pytestmark = pytest.mark.parametrize("db_url", SERVERS, indirect=True)

ROUNDS = 5
ALREADY = "already stored"


def _noop(*args: Any) -> None:
    """An engine listener that only looks: it sends the store's calls through Core."""


@pytest.fixture(params=["driver", "core"])
async def proxied(
    db_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[SessionStore, CuttingProxy, str]]:
    url = make_url(db_url)
    postgres = url.get_backend_name() == "postgresql"
    proxy = CuttingProxy(url.host or "127.0.0.1", url.port or (5432 if postgres else 3306))
    port = await proxy.start()
    through = url.set(host="127.0.0.1", port=port)
    if postgres:
        through = through.update_query_dict({"ssl": "disable"})  # readable protocol bytes
    engine = create_async_engine(through)
    if request.param == "core":
        event.listen(engine.sync_engine, "before_cursor_execute", _noop)
    store = SessionStore(engine)
    try:
        await store.create_tables()
        expected = Path.DRIVER if request.param == "driver" else Path.CORE
        assert await store._transport.path() is expected
        yield store, proxy, request.param
    finally:
        await store.close()
        await engine.dispose()
        await proxy.close()


def _arm_after_commit(
    proxy: CuttingProxy, store: SessionStore, path: str, scoped: bool = False
) -> None:
    """Cut once the server has committed, dropping its acknowledgement."""
    if store.engine.dialect.name != "postgresql":
        proxy.arm_reply_to(b"COMMIT")  # aiomysql sends COMMIT as a query; its OK is dropped
    elif path == "driver":
        # One statement, answered only after its commit: the SELECT counting the upserted
        # session row (plain and owner's handles alike: ``_expiry.append_postgresql``).
        proxy.arm_reply(b"SELECT 1\x00")
    else:
        proxy.arm_reply(b"COMMIT\x00")


async def test_a_connection_cut_after_the_server_committed_add_items_succeeds_and_stores_once(
    proxied: tuple[SessionStore, CuttingProxy, str],
    caplog: pytest.LogCaptureFixture,
    figures: Figures,
    request: pytest.FixtureRequest,
) -> None:
    store, proxy, path = proxied
    session = store.session("victim")
    await session.add_items([{"n": 0}])
    expected = [{"n": 0}]
    started = time.perf_counter()
    with caplog.at_level(logging.DEBUG, logger="agent_session_store"):
        for r in range(ROUNDS):
            batch = [{"r": r, "i": 0}, {"r": r, "i": 1}]
            caplog.clear()
            _arm_after_commit(proxy, store, path)

            await session.add_items(batch)  # no error: settled by the key

            assert proxy.cuts == r + 1
            # The second send was refused by the key: the first had committed.
            assert any(ALREADY in rec.getMessage() for rec in caplog.records)
            expected += batch
    assert await session.get_items() == expected
    figures.add(
        f"add_items cut after commit ({path})",
        database_of(request),
        runs=ROUNDS,
        items=len(expected),
        faults=proxy.cuts,
        seconds=time.perf_counter() - started,
        note="0 errors, 0 duplicates: the resend was refused by the key",
    )


async def test_a_connection_cut_before_the_server_got_the_write_add_items_succeeds_and_stores_once(
    proxied: tuple[SessionStore, CuttingProxy, str],
    caplog: pytest.LogCaptureFixture,
    figures: Figures,
    request: pytest.FixtureRequest,
) -> None:
    store, proxy, path = proxied
    session = store.session("victim")
    expected: list[dict[str, Any]] = []
    with caplog.at_level(logging.DEBUG, logger="agent_session_store"):
        for r in range(ROUNDS):
            marker = f"cut-{r}-here"
            batch = [{"r": marker, "i": 0}, {"r": marker, "i": 1}]
            caplog.clear()
            proxy.arm_request(marker.encode())  # the write itself never reaches the server

            await session.add_items(batch)

            assert proxy.cuts == r + 1
            assert not any(ALREADY in rec.getMessage() for rec in caplog.records)
            expected += batch
    assert await session.get_items() == expected
    figures.add(
        f"add_items cut before the server got it ({path})",
        database_of(request),
        runs=ROUNDS,
        items=len(expected),
        faults=proxy.cuts,
        note="0 errors, 0 lost: sent again, stored once",
    )


async def test_an_owner_scoped_add_cut_after_commit_succeeds_and_stores_once(
    proxied: tuple[SessionStore, CuttingProxy, str],
) -> None:
    store, proxy, path = proxied
    session = store.session("owned", user_id="alice")
    await session.add_items([{"n": 0}])
    _arm_after_commit(proxy, store, path, scoped=True)

    await session.add_items([{"n": 1}, {"n": 2}])

    assert proxy.cuts == 1
    assert await session.get_items() == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_a_lost_commit_while_the_database_stays_unreachable_raises_with_the_key_to_retry(
    proxied: tuple[SessionStore, CuttingProxy, str],
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, proxy, path = proxied
    monkeypatch.setattr(_idempotency, "RESOLVE_SECONDS", 0.5)
    session = store.session("victim")
    await session.add_items([{"n": 0}])
    _arm_after_commit(proxy, store, path)
    proxy.refuse_after_cut = True  # the server is unreachable from then on

    with pytest.raises(CommitOutcomeUnknownError, match="idempotency_key=") as raised:
        await session.add_items([{"n": 1}])

    key = raised.value.idempotency_key
    assert key is not None
    # Once the database is back, the same call with that key settles it: stored once.
    async with SessionStore(db_url) as direct:
        await direct.session("victim").add_items([{"n": 1}], idempotency_key=key)
        assert await direct.session("victim").get_items() == [{"n": 0}, {"n": 1}]
