"""The opt-in archive: removals move rows, restore gives the exact history back, purges."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select, update

from agent_session_store import (
    ArgumentTypeError,
    InvalidArgumentError,
    SessionOwnershipError,
    SessionStore,
)

from .test_history import items


@pytest.fixture
async def archiving(db_url: str) -> AsyncIterator[SessionStore]:
    async with SessionStore(db_url, archive=True) as store:
        await store.create_tables()
        yield store


async def archived(store: SessionStore, session_id: str | None = None) -> list[tuple[Any, ...]]:
    a = store.archive_table
    stmt = select(a.c.session_id, a.c.reason, a.c.message_data).order_by(a.c.id)
    if session_id is not None:
        stmt = stmt.where(a.c.session_id == session_id)
    async with store.engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(stmt)]


async def test_restore_after_clear_returns_the_exact_history(archiving: SessionStore) -> None:
    chat = archiving.session("chat", user_id="u-1")
    await chat.add_items(items(7))
    await chat.clear_session()
    assert await chat.get_items() == []
    assert [r[1] for r in await archived(archiving)] == ["clear"] * 7
    assert await archiving.restore("chat") == 7
    assert await chat.get_items() == items(7)
    assert (await chat.info()).user_id == "u-1"  # type: ignore[union-attr]
    assert await archived(archiving) == []


async def test_restore_after_replace_returns_the_exact_history_and_archives_the_new_one(
    archiving: SessionStore,
) -> None:
    chat = archiving.session("chat")
    await chat.add_items(items(5))
    await chat.replace_items(items(2, "summary"))
    await chat.add_items(items(1, "after"))
    assert await archiving.restore("chat") == 5
    assert await chat.get_items() == items(5)
    kept = [(r[1], r[2]) for r in await archived(archiving)]
    assert [reason for reason, _ in kept] == ["restore"] * 3  # nothing lost by restoring


async def test_restore_undoes_rewind_and_pop_one_operation_at_a_time(
    archiving: SessionStore,
) -> None:
    chat = archiving.session("chat")
    await chat.add_items(items(6))
    assert await chat.rewind(3) == items(6)[3:]
    assert await chat.pop_item() == items(6)[2]
    assert await chat.get_items() == items(6)[:2]
    assert await archiving.restore("chat") == 1  # the pop
    assert await chat.get_items() == items(6)[:3]
    assert await archiving.restore("chat") == 3  # the rewind
    assert await chat.get_items() == items(6)
    assert await archiving.restore("chat") == 0  # nothing left to undo
    assert await chat.get_items() == items(6)


async def test_every_removal_moves_its_rows_and_the_live_table_keeps_none_of_them(
    archiving: SessionStore,
) -> None:
    chat = archiving.session("chat")
    await chat.add_items(items(6))
    await chat.pop_item()
    await chat.rewind(3)
    await chat.replace_items(items(1, "s"))
    await chat.clear_session()
    reasons = [r[1] for r in await archived(archiving)]
    assert reasons == ["pop", "rewind", "rewind", "replace", "replace", "replace", "clear"]
    assert await archiving.count_items("chat") == 0


async def test_restore_and_archived_pops_respect_the_owner(archiving: SessionStore) -> None:
    await archiving.session("chat", user_id="u-1").add_items(items(3))
    intruder = archiving.session("chat", user_id="u-2")
    with pytest.raises(SessionOwnershipError):
        await intruder.pop_item()
    with pytest.raises(SessionOwnershipError):
        await intruder.clear_session()
    await archiving.session("chat", user_id="u-1").clear_session()
    with pytest.raises(SessionOwnershipError):
        await archiving.restore("chat", user_id="u-2")
    assert await archiving.restore("chat", user_id="u-1") == 3


async def test_erase_user_and_purge_expired_remove_archived_rows_too(
    archiving: SessionStore,
) -> None:
    await archiving.session("a", user_id="u-1").add_items(items(3))
    await archiving.session("a", user_id="u-1").clear_session()  # row gone, archive kept
    await archiving.session("b", user_id="u-1").add_items(items(2))
    await archiving.session("b", user_id="u-1").pop_item()
    await archiving.session("c", user_id="u-2").add_items(items(2))
    await archiving.session("c", user_id="u-2").pop_item()
    await archiving.erase_user("u-1")
    assert {r[0] for r in await archived(archiving)} == {"c"}
    s = archiving.sessions
    past = datetime.now(timezone.utc) - timedelta(days=1)
    async with archiving.engine.begin() as conn:
        await conn.execute(update(s).where(s.c.session_id == "c").values(expires_at=past))
    await archiving.purge_expired()
    assert await archived(archiving) == []


async def test_delete_sessions_removes_the_archived_rows_of_the_sessions_it_deletes(
    archiving: SessionStore,
) -> None:
    for session_id in ("old", "new"):
        chat = archiving.session(session_id)
        await chat.add_items(items(4))
        await chat.rewind(1)
    await archiving.session("gone").add_items(items(2))
    await archiving.session("gone").clear_session()  # row gone, archive kept: not pruned
    s = archiving.sessions
    past = datetime.now(timezone.utc) - timedelta(days=10)
    async with archiving.engine.begin() as conn:
        await conn.execute(update(s).where(s.c.session_id == "old").values(updated_at=past))
    dry = await archiving.delete_sessions(older_than=timedelta(days=5), dry_run=True)
    assert (dry.sessions, dry.items) == (1, 1)
    assert len(await archived(archiving, "old")) == 3
    done = await archiving.delete_sessions(older_than=timedelta(days=5))
    assert (done.sessions, done.items) == (1, 1)
    assert await archived(archiving, "old") == []
    assert {r[0] for r in await archived(archiving)} == {"new", "gone"}
    assert await archiving.restore("new") == 3


async def test_purge_archive_deletes_what_is_older_than_asked_or_than_the_retention(
    db_url: str,
) -> None:
    async with SessionStore(db_url, archive=timedelta(days=30)) as store:
        await store.create_tables()
        chat = store.session("chat")
        await chat.add_items(items(4))
        await chat.rewind(2)
        a = store.archive_table
        old = datetime.now(timezone.utc) - timedelta(days=40)
        async with store.engine.begin() as conn:
            first = (await conn.execute(select(func.min(a.c.id)))).scalar_one()
            await conn.execute(update(a).where(a.c.id == first).values(archived_at=old))
        assert await store.purge_archive(older_than=timedelta(days=100)) == 0
        assert await store.purge_archive() == 1  # the retention: 30 days
        assert len(await archived(store)) == 1
        assert await store.purge_archive(older_than=datetime.now(timezone.utc) + timedelta(1)) == 1


async def test_archive_arguments_are_checked(db_url: str, store: SessionStore) -> None:
    with pytest.raises(ArgumentTypeError, match="archive must be"):
        SessionStore(db_url, archive="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="positive"):
        SessionStore(db_url, archive=timedelta(0))
    with pytest.raises(InvalidArgumentError, match="older_than"):
        await store.purge_archive()
    with pytest.raises(ArgumentTypeError, match="older_than"):
        await store.purge_archive(older_than=3)  # type: ignore[arg-type]


async def test_a_store_without_the_archive_restores_what_an_archiving_one_kept(
    archiving: SessionStore, db_url: str
) -> None:
    if db_url.endswith(":memory:"):
        pytest.skip("a second store on :memory: is another database")
    await archiving.session("chat").add_items(items(3))
    await archiving.session("chat").clear_session()
    async with SessionStore(db_url) as plain:
        assert await plain.restore("chat") == 3
        assert await plain.session("chat").get_items() == items(3)


async def test_the_archive_is_chosen_once_and_off_leaves_the_plain_statements(
    db_url: str, store: SessionStore
) -> None:
    assert store.session("s")._scope.removes_plainly  # pop/clear take the plain statements
    async with SessionStore(db_url, archive=True) as archiving:
        assert not archiving.session("s")._scope.removes_plainly
        assert archiving.session("s")._scope.plain  # reads and appends stay plain
