"""rewind, replace_items and fork: what each keeps, returns and refuses, on every database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from agent_session_store import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidItemError,
    SessionExistsError,
    SessionNotFoundError,
    SessionOwnershipError,
    SessionStore,
)


def items(n: int, tag: str = "i") -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{tag}{k}"} for k in range(n)]


async def archived_rows(store: SessionStore) -> int:
    async with store.engine.connect() as conn:
        counted = select(func.count()).select_from(store.archive_table)
        return int((await conn.execute(counted)).scalar_one())


async def test_rewind_keeps_the_first_n_items_and_returns_the_rest_in_order(
    store: SessionStore,
) -> None:
    chat = store.session("chat")
    await chat.add_items(items(10))
    removed = await chat.rewind(4)
    assert removed == items(10)[4:]
    assert await chat.get_items() == items(10)[:4]
    await chat.add_items([{"role": "user", "content": "edited"}])
    assert await chat.get_items() == [*items(10)[:4], {"role": "user", "content": "edited"}]


async def test_rewind_with_return_items_false_counts_what_it_removed(store: SessionStore) -> None:
    chat = store.session("chat")
    await chat.add_items(items(30))
    assert await chat.rewind(keep=25, return_items=False) == 5
    assert await chat.rewind(keep=25, return_items=False) == 0
    assert await chat.get_items() == items(30)[:25]


async def test_rewind_to_zero_empties_the_history_but_keeps_the_session_record(
    store: SessionStore,
) -> None:
    chat = store.session("chat")
    await chat.add_items(items(3))
    await chat.update(title="kept")
    assert await chat.rewind(0) == items(3)
    assert await chat.get_items() == []
    info = await chat.info()
    assert info is not None and info.title == "kept" and info.item_count == 0


async def test_rewind_past_the_end_or_of_an_unknown_session_removes_nothing(
    store: SessionStore,
) -> None:
    chat = store.session("chat")
    await chat.add_items(items(3))
    assert await chat.rewind(3) == []
    assert await chat.rewind(100) == []
    assert await store.session("nobody").rewind(0) == []
    assert await chat.get_items() == items(3)


@pytest.mark.parametrize(
    ("keep", "error"),
    [(-1, InvalidArgumentError), ("2", ArgumentTypeError), (True, ArgumentTypeError)],
)
async def test_rewind_refuses_a_keep_that_is_not_a_count(
    store: SessionStore, keep: Any, error: type[Exception]
) -> None:
    chat = store.session("chat")
    await chat.add_items(items(3))
    with pytest.raises(error, match="keep"):
        await chat.rewind(keep)
    assert await chat.get_items() == items(3)


async def test_replace_items_swaps_the_whole_history(store: SessionStore) -> None:
    chat = store.session("chat")
    await chat.add_items(items(8))
    await chat.replace_items(items(2, "summary"))
    assert await chat.get_items() == items(2, "summary")
    await chat.add_items(items(1, "next"))
    assert await chat.get_items() == [*items(2, "summary"), *items(1, "next")]
    await chat.replace_items([])
    assert await chat.get_items() == []
    await store.session("new").replace_items(items(2))  # creates the session
    assert await store.session("new").get_items() == items(2)


async def test_replace_items_with_a_bad_item_changes_nothing(store: SessionStore) -> None:
    chat = store.session("chat")
    await chat.add_items(items(3))
    with pytest.raises(InvalidItemError):
        await chat.replace_items([{"ok": 1}, {"bad": float("nan")}])
    assert await chat.get_items() == items(3)


async def test_fork_copies_the_history_in_order_and_records_where_it_came_from(
    store: SessionStore,
) -> None:
    source = store.session("main", user_id="u-1")
    await source.add_items(items(6))
    await source.update(title="Trip", metadata={"team": "red"})
    branch = await store.fork("main", "branch")
    assert await branch.get_items() == items(6)
    info = await store.info("branch")
    main_ids = await item_ids(store, "main")
    assert info is not None
    assert (info.user_id, info.title, info.metadata) == ("u-1", "Trip", {"team": "red"})
    assert info.forked_from == ("main", main_ids[-1])
    assert (await store.info("main")).forked_from is None  # type: ignore[union-attr]
    await branch.add_items(items(1, "b"))  # the branches are independent
    assert await source.get_items() == items(6)


async def item_ids(store: SessionStore, session_id: str) -> list[int]:
    m = store.messages
    async with store.engine.connect() as conn:
        ids = select(m.c.id).where(m.c.session_id == session_id).order_by(m.c.id)
        rows = await conn.execute(ids)
        return [int(r[0]) for r in rows]


async def test_fork_upto_copies_the_first_items_and_takes_a_new_owner_and_title(
    store: SessionStore,
) -> None:
    await store.session("main", user_id="u-1").add_items(items(6))
    ids = await item_ids(store, "main")
    branch = await store.fork("main", "b3", upto=3, user_id="u-1", title="Branch")
    assert await branch.get_items() == items(6)[:3]
    info = await branch.info()
    assert info is not None and info.title == "Branch" and info.forked_from == ("main", ids[2])
    empty = await store.fork("main", "b0", upto=0)
    assert await empty.get_items() == []
    assert (await store.info("b0")).forked_from == ("main", None)  # type: ignore[union-attr]
    assert await (await store.fork("main", "all", upto=99)).get_items() == items(6)


async def test_fork_refuses_an_existing_new_id_an_unknown_source_and_another_owner(
    store: SessionStore,
) -> None:
    await store.session("main", user_id="u-1").add_items(items(3))
    await store.session("taken").add_items(items(1, "t"))
    with pytest.raises(SessionExistsError, match="'taken' already exists"):
        await store.fork("main", "taken")
    assert await store.session("taken").get_items() == items(1, "t")
    with pytest.raises(SessionNotFoundError, match="'nope' does not exist"):
        await store.fork("nope", "x")
    with pytest.raises(SessionOwnershipError):
        await store.fork("main", "x", user_id="u-2")
    with pytest.raises(InvalidArgumentError):
        await store.fork("main", "main")
    with pytest.raises(ArgumentTypeError):
        await store.fork("main", "x", upto="3")  # type: ignore[arg-type]
    assert await store.info("x") is None


async def test_rewind_and_replace_by_another_user_are_refused_and_change_nothing(
    store: SessionStore,
) -> None:
    await store.session("chat", user_id="u-1").add_items(items(4))
    intruder = store.session("chat", user_id="u-2")
    with pytest.raises(SessionOwnershipError):
        await intruder.rewind(1)
    with pytest.raises(SessionOwnershipError):
        await intruder.replace_items(items(1, "x"))
    assert await store.session("chat").get_items() == items(4)
    mine = store.session("chat", user_id="u-1")
    assert await mine.rewind(2) == items(4)[2:]
    await mine.replace_items(items(1, "y"))
    assert await mine.get_items() == items(1, "y")
    owned = store.session("fresh", user_id="u-3")
    await owned.replace_items(items(1))
    assert (await owned.info()).user_id == "u-3"  # type: ignore[union-attr]


async def test_with_the_archive_off_nothing_is_archived(store: SessionStore) -> None:
    chat = store.session("chat")
    await chat.add_items(items(6))
    await chat.pop_item()
    await chat.rewind(3)
    await chat.replace_items(items(2, "s"))
    await chat.clear_session()
    assert await archived_rows(store) == 0


async def test_an_expired_session_rewinds_as_empty_and_replace_starts_it_afresh(
    db_url: str,
) -> None:
    from datetime import datetime, timedelta, timezone

    async with SessionStore(db_url, ttl=timedelta(hours=1)) as store:
        await store.create_tables()
        chat = store.session("chat")
        await chat.add_items(items(4))
        await chat.update(title="old", expires_at=datetime.now(timezone.utc) - timedelta(1))
        assert await chat.rewind(1) == []
        await chat.replace_items(items(2, "new"))
        assert await chat.get_items() == items(2, "new")
        info = await chat.info()
        assert info is not None and info.title is None and info.expires_at is not None


async def test_fork_of_an_expired_source_is_refused_as_missing_and_writes_nothing(
    store: SessionStore,
) -> None:
    from datetime import datetime, timedelta, timezone

    old = store.session("old", user_id="u-1")
    await old.add_items(items(3))
    await old.update(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    assert await old.get_items() == [] and await old.info() is None  # it reads as gone
    with pytest.raises(SessionNotFoundError, match="'old' does not exist or has expired"):
        await store.fork("old", "revived")
    with pytest.raises(SessionNotFoundError):
        await store.fork("old", "revived", upto=0, user_id="u-1")
    assert await store.info("revived") is None
    assert await store.session("revived").get_items() == []
    async with store.engine.connect() as conn:
        m = store.messages
        copied = select(func.count()).select_from(m).where(m.c.session_id == "revived")
        assert (await conn.execute(copied)).scalar_one() == 0
