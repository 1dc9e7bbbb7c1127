"""Store-level operations: listing, counting, pruning, export and import, on every dialect."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import insert, text, update

from agent_session_store import SessionStore
from agent_session_store.errors import InvalidRecordError

UTC = timezone.utc


def msg(i: int) -> dict[str, Any]:
    return {"role": "user", "content": f"message {i} ✓"}


async def set_updated(store: SessionStore, session_id: str, when: datetime) -> None:
    s = store.sessions
    async with store.engine.begin() as conn:
        await conn.execute(
            update(s).where(s.c.session_id == session_id).values(updated_at=when, created_at=when)
        )


async def fill(store: SessionStore, counts: dict[str, int]) -> None:
    base = datetime(2024, 1, 1, tzinfo=UTC)
    for n, (session_id, count) in enumerate(counts.items()):
        await store.session(session_id).add_items([msg(i) for i in range(count)] or [msg(0)])
        if count == 0:
            await store.session(session_id).pop_item()
        await set_updated(store, session_id, base + timedelta(minutes=n))


async def test_list_sessions_newest_first_with_item_counts(store: SessionStore) -> None:
    await fill(store, {"a": 2, "b": 0, "c": 5})
    page = await store.list_sessions()
    assert [(i.session_id, i.item_count) for i in page.sessions] == [("c", 5), ("b", 0), ("a", 2)]
    assert page.next_cursor is None
    assert page.sessions[0].updated_at == datetime(2024, 1, 1, 0, 2, tzinfo=UTC)
    oldest = await store.list_sessions(order="oldest")
    assert [i.session_id for i in oldest.sessions] == ["a", "b", "c"]


@pytest.mark.parametrize("order", ["newest", "oldest"])
async def test_list_sessions_pages_visit_every_session_once_despite_equal_timestamps(
    store: SessionStore, order: Any
) -> None:
    await fill(store, {f"s{i:02d}": 1 for i in range(7)})
    same = datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    for session_id in ("s01", "s02", "s03", "s04"):
        await set_updated(store, session_id, same)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list_sessions(limit=2, cursor=cursor, order=order)
        seen += [i.session_id for i in page.sessions]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == [f"s{i:02d}" for i in range(7)]
    assert len(seen) == 7
    assert pages == 4


async def test_list_sessions_rejects_a_cursor_it_did_not_make(store: SessionStore) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await store.list_sessions(cursor="not-a-cursor")
    with pytest.raises(ValueError, match="limit"):
        await store.list_sessions(limit=0)


async def test_count_items_counts_one_session(store: SessionStore) -> None:
    await fill(store, {"a": 3, "b": 1})
    assert await store.count_items("a") == 3
    assert await store.count_items("nobody") == 0


async def test_delete_sessions_removes_only_sessions_not_updated_since_cutoff(
    store: SessionStore,
) -> None:
    await fill(store, {"old1": 2, "old2": 3, "new": 4})
    await set_updated(store, "new", datetime.now(UTC))
    dry = await store.delete_sessions(older_than=timedelta(days=30), dry_run=True)
    assert (dry.sessions, dry.items) == (2, 5)
    assert await store.count_items("old1") == 2
    done = await store.delete_sessions(older_than=timedelta(days=30))
    assert (done.sessions, done.items) == (2, 5)
    assert [i.session_id for i in (await store.list_sessions()).sessions] == ["new"]
    assert await store.session("new").get_items() == [msg(i) for i in range(4)]
    again = await store.delete_sessions(older_than=datetime.now(UTC) - timedelta(days=30))
    assert (again.sessions, again.items) == (0, 0)


async def test_delete_sessions_rejects_a_naive_cutoff(store: SessionStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        await store.delete_sessions(older_than=datetime(2024, 1, 1))


async def test_delete_sessions_works_through_more_than_one_batch(store: SessionStore) -> None:
    s = store.sessions
    old = datetime(2020, 1, 1, tzinfo=UTC)
    rows = [{"session_id": f"s{i:04d}", "created_at": old, "updated_at": old} for i in range(1203)]
    async with store.engine.begin() as conn:
        await conn.execute(insert(s), rows)
    done = await store.delete_sessions(older_than=timedelta(days=1))
    assert done.sessions == 1203
    assert (await store.list_sessions()).sessions == []


async def test_export_then_import_into_an_empty_store_matches_item_for_item(
    store: SessionStore, tmp_path: Any
) -> None:
    await fill(store, {"a": 3, "empty": 0, "b": 1200})
    await store.session("a").add_items([{"type": "reasoning", "summary": [], "n": [1, 2.5, None]}])
    records = [r async for r in store.export_sessions(batch_size=100)]
    assert [r["session"] for r in records if "session" in r] == ["a", "b", "empty"]
    async with SessionStore(f"sqlite+aiosqlite:///{tmp_path / 'copy.db'}") as copy:
        await copy.create_tables()
        result = await copy.import_sessions(records, batch_size=100)
        assert (result.created, result.skipped, result.items) == (3, 0, 1204)
        assert [r async for r in copy.export_sessions()] == records
        for session_id in ("a", "b", "empty"):
            assert await copy.session(session_id).get_items() == (
                await store.session(session_id).get_items()
            )
        before = await copy.list_sessions()
        assert before == await store.list_sessions()


async def test_import_twice_changes_nothing_and_replace_overwrites(
    store: SessionStore,
) -> None:
    when = "2024-02-03T04:05:06.789000+00:00"
    records = [
        {"session": "a", "created_at": when, "updated_at": when},
        {"item": msg(0), "created_at": when},
        {"item": msg(1), "created_at": when},
    ]
    first = await store.import_sessions(records)
    assert (first.created, first.items) == (1, 2)
    await store.session("a").add_items([msg(2)])
    again = await store.import_sessions(iter(records))
    assert (again.created, again.skipped, again.items) == (0, 1, 0)
    assert await store.session("a").get_items() == [msg(0), msg(1), msg(2)]
    replaced = await store.import_sessions(records, replace=True)
    assert (replaced.replaced, replaced.items) == (1, 2)
    assert await store.session("a").get_items() == [msg(0), msg(1)]
    info = await store.session_info("a")
    assert info is not None and info.updated_at.isoformat() == when


async def test_export_selected_ids_and_keeps_undecodable_rows_as_raw(store: SessionStore) -> None:
    await fill(store, {"a": 1, "b": 1})
    async with store.engine.begin() as conn:
        await conn.execute(insert(store.messages).values(session_id="b", message_data="{broken"))
    records = [r async for r in store.export_sessions(["b"])]
    assert [r.get("session") for r in records] == ["b", None, None]
    assert records[2]["raw"] == "{broken"
    await store.clear_session("b")
    await store.import_sessions(records)
    assert [r async for r in store.export_sessions(["b"])] == records


async def test_import_rejects_malformed_records_and_rolls_back_that_session(
    store: SessionStore,
) -> None:
    when = "2024-02-03T04:05:06+00:00"
    with pytest.raises(InvalidRecordError, match="session record"):
        await store.import_sessions([{"item": msg(0), "created_at": when}])
    bad_item = [{"session": "x", "created_at": when, "updated_at": when}, {"what": 1}]
    with pytest.raises(InvalidRecordError, match="item record"):
        await store.import_sessions(bad_item)
    assert await store.session_info("x") is None
    with pytest.raises(InvalidRecordError, match="ISO 8601"):
        await store.import_sessions([{"session": "y", "created_at": "yesterday"}])


@pytest.mark.sqlite
async def test_list_sessions_pages_sqlite_files_with_sdk_style_timestamps(tmp_path: Any) -> None:
    # The SDK's SQLiteSession stores "YYYY-MM-DD HH:MM:SS" (no fraction); ours add microseconds.
    async with SessionStore(f"sqlite+aiosqlite:///{tmp_path / 'sdk.db'}") as store:
        await store.create_tables()
        await fill(store, {f"s{i}": 1 for i in range(5)})
        async with store.engine.begin() as conn:
            await conn.execute(
                text("UPDATE agent_sessions SET updated_at = :t WHERE session_id != 's4'"),
                {"t": "2024-05-01 10:00:00"},
            )
        for order in ("newest", "oldest"):
            seen: list[str] = []
            cursor = None
            for _ in range(10):
                page = await store.list_sessions(limit=1, cursor=cursor, order=order)  # type: ignore[arg-type]
                seen += [i.session_id for i in page.sessions]
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert sorted(seen) == ["s0", "s1", "s2", "s3", "s4"], (order, seen)
