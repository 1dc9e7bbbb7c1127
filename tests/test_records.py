"""Session records: titles and metadata patched in the database, filtered keyset listing."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select, text, update

from agent_session_store import (
    InvalidMetadataError,
    SessionOwnershipError,
    SessionStore,
)
from agent_session_store.records import SessionRecords

from .conftest import dialect_of


def records_of(store: SessionStore) -> SessionRecords:
    return store.records


async def raw_row(store: SessionStore, session_id: str) -> tuple[Any, ...]:
    s = store.sessions
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(s).where(s.c.session_id == session_id))).one()
    return tuple(row)


async def test_update_sets_the_title_and_patches_metadata_keys_leaving_the_others(
    store: SessionStore,
) -> None:
    records = records_of(store)
    await store.session("s").add_items([{"n": 1}])
    await records.update("s", title="Trip to Lyon", metadata={"team": "a", "n": 1, "tags": [1]})
    await records.update("s", metadata={"n": None, "nested": {"k": [None, 2.5]}, "ok": True})
    info = await records.info("s")
    assert info is not None
    assert info.title == "Trip to Lyon"
    assert info.metadata == {"team": "a", "tags": [1], "nested": {"k": [None, 2.5]}, "ok": True}
    assert info.item_count == 1 and info.user_id is None and info.expires_at is None
    # A nested object given again replaces the stored one: one meaning on every database.
    await records.update("s", metadata={"nested": {"other": 1}}, title=None)
    info = await records.info("s")
    assert info is not None and info.title is None
    assert info.metadata["nested"] == {"other": 1}


async def test_metadata_patches_of_different_keys_at_once_are_all_kept(
    shared_db_url: str,
) -> None:
    async with SessionStore(shared_db_url) as store:
        await store.create_tables()
        records = records_of(store)
        await records.update("s", metadata={"start": 0})
        await asyncio.gather(*(records.update("s", metadata={f"k{i}": i}) for i in range(20)))
        info = await records.info("s")
        assert info is not None
        assert info.metadata == {"start": 0, **{f"k{i}": i for i in range(20)}}


@pytest.mark.parametrize(
    "change",
    [
        {"metadata": {"x": float("nan")}},
        {"metadata": {"x": object()}},
        {"metadata": {'quo"te': 1}},
        {"metadata": {"": 1}},
        {"metadata": {1: 1}},
        {"metadata": ["not", "a", "dict"]},
        {"metadata": {"big": "x" * 70_000}},
        {"title": "t" * 1_001},
        {"title": 42},
    ],
    ids=["nan", "object", "quote_key", "empty_key", "int_key", "list", "too_big", "long", "int"],
)
async def test_bad_titles_and_metadata_are_refused_and_nothing_is_written(
    store: SessionStore, change: dict[str, Any]
) -> None:
    records = records_of(store)
    await records.update("s", title="kept", metadata={"kept": 1})
    before = await raw_row(store, "s")
    with pytest.raises(InvalidMetadataError):
        await records.update("s", **change)
    assert await raw_row(store, "s") == before


async def test_update_and_info_by_another_owner_are_refused_and_change_nothing(
    store: SessionStore,
) -> None:
    records = records_of(store)
    await records.update("s", "u-1", title="mine", metadata={"a": 1})
    await records.update("free", title="nobody's")
    before = {sid: await raw_row(store, sid) for sid in ("s", "free")}
    for session_id in ("s", "free"):
        with pytest.raises(SessionOwnershipError, match="nothing was read or changed"):
            await records.update(session_id, "u-2", title="theirs", metadata={"a": 2})
        with pytest.raises(SessionOwnershipError):
            await records.info(session_id, "u-2")
    assert {sid: await raw_row(store, sid) for sid in ("s", "free")} == before
    info = await records.info("s", "u-1")
    assert info is not None and info.user_id == "u-1" and info.title == "mine"


async def fill(store: SessionStore) -> None:
    """Sessions of three users with titles and metadata, updated one after another."""
    records = records_of(store)
    for i in range(12):
        user = f"u{i % 3}"
        await records.update(
            f"s{i:02d}",
            user,
            title=f"Chat {i} about {'Paris' if i % 2 else 'Rome'}",
            metadata={"team": "red" if i < 6 else "blue", "n": i, "vip": i % 4 == 0},
        )


async def ids(page: Any) -> list[str]:
    return [record.session_id for record in page.sessions]


async def test_list_sessions_filters_by_user_metadata_title_and_time(store: SessionStore) -> None:
    await fill(store)
    records = records_of(store)
    newest_first = [f"s{i:02d}" for i in reversed(range(12))]
    assert await ids(await records.list_sessions()) == newest_first
    assert await ids(await records.list_sessions(user_id="u1")) == ["s10", "s07", "s04", "s01"]
    red_vip = await records.list_sessions(metadata={"team": "red", "vip": True})
    assert await ids(red_vip) == ["s04", "s00"]
    assert await ids(await records.list_sessions(metadata={"n": 7})) == ["s07"]
    assert await ids(await records.list_sessions(metadata={"vip": 1})) == []  # 1 is not true
    paris = await records.list_sessions(title_contains="PARIS", user_id="u0")
    assert await ids(paris) == ["s09", "s03"]
    assert await ids(await records.list_sessions(title_contains="%")) == []  # no wildcard
    middle = (await records.info("s05")), (await records.info("s08"))
    assert middle[0] is not None and middle[1] is not None
    window = await records.list_sessions(
        updated_after=middle[0].updated_at, updated_before=middle[1].updated_at, order="oldest"
    )
    assert await ids(window) == ["s05", "s06", "s07"]


async def test_list_sessions_pages_visit_each_matching_session_once(store: SessionStore) -> None:
    await fill(store)
    records = records_of(store)
    s = store.sessions
    async with store.engine.begin() as conn:  # equal timestamps: the id breaks the tie
        await conn.execute(update(s).values(updated_at=datetime(2026, 1, 1, tzinfo=timezone.utc)))
    seen: list[str] = []
    cursor = None
    while True:
        page = await records.list_sessions(user_id="u2", limit=2, cursor=cursor)
        seen += await ids(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["s11", "s08", "s05", "s02"]
    with pytest.raises(ValueError, match="not returned by list_sessions"):
        await records.list_sessions(cursor="bogus")


async def test_expired_sessions_are_not_listed_and_read_as_no_record(store: SessionStore) -> None:
    await fill(store)
    records = records_of(store)
    past = datetime.now(timezone.utc) - timedelta(seconds=5)
    await records.update("s03", expires_at=past)
    await records.update("s04", expires_at=past + timedelta(days=1))
    listed = await ids(await records.list_sessions(user_id="u0"))
    assert listed == ["s09", "s06", "s00"]
    with_expired = await records.list_sessions(user_id="u0", include_expired=True)
    assert await ids(with_expired) == ["s03", "s09", "s06", "s00"]  # the update moved it
    assert await records.info("s03") is None
    info = await records.info("s04")
    assert info is not None and info.expires_at is not None


async def test_listing_a_page_is_served_by_an_index_without_sorting(store: SessionStore) -> None:
    # Enough rows, with statistics, that each planner prefers the index to a scan and sort.
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = [
        {
            "session_id": f"s{i:05d}",
            "user_id": f"u{i % 5}",
            "updated_at": start + timedelta(seconds=i),
        }
        for i in range(5_000)
    ]
    async with store.engine.begin() as conn:
        await conn.execute(store.sessions.insert(), rows)
        analyze = "ANALYZE TABLE" if dialect_of(str(store.engine.url)) == "mariadb" else "ANALYZE"
        await conn.execute(text(f"{analyze} agent_sessions"))
    records = records_of(store)
    dialect = dialect_of(str(store.engine.url))
    for user, index in (
        (None, "ix_agent_sessions_updated"),
        ("u1", "ix_agent_sessions_user_updated"),
    ):
        query = records.listing_query(user_id=user)
        compiled = query.compile(store.engine, compile_kwargs={"literal_binds": True})
        async with store.engine.connect() as conn:
            if dialect == "sqlite":
                plan = " ".join(
                    str(row[-1])
                    for row in await conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
                )
                assert index in plan and "TEMP B-TREE" not in plan, plan
            elif dialect == "postgresql":
                rows = await conn.execute(text(f"EXPLAIN {compiled}"))
                plan = "\n".join(row[0] for row in rows)
                assert index in plan and "Sort" not in plan, plan
            else:
                rows = (await conn.execute(text(f"EXPLAIN {compiled}"))).mappings().all()
                outer = rows[0]
                assert outer["key"] == index and "filesort" not in str(outer["Extra"]), rows
