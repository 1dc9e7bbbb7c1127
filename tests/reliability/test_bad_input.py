"""Bad input: a specific exception with a useful message, and the database left as it was."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import MetaData, event, select, text

from agent_session_store import (
    InvalidArgumentError,
    InvalidIdentifierError,
    InvalidItemError,
    ItemTooLargeError,
    SessionStore,
    SQLAlchemySession,
)

from ..conftest import ALL_KINDS
from .figures import Figures, database_of


def nested(depth: int) -> dict[str, Any]:
    item: dict[str, Any] = {}
    inner = item
    for _ in range(depth):
        inner["n"] = {}
        inner = inner["n"]
    return item


def short(value: Any) -> str:
    try:
        return repr(value)[:40]
    except RecursionError:
        return "deeply-nested"


BAD_TABLE_NAMES = [
    ("x; DROP TABLE y", "not a valid identifier"),
    ("", "not a valid identifier"),
    ("t" * 64, "at most 63 characters"),
    ('my"table', "not a valid identifier"),
    ("it's", "not a valid identifier"),
    ("`backtick`", "not a valid identifier"),
    ("name with space", "not a valid identifier"),
    (42, "not a valid identifier"),
]

BAD_SESSION_IDS = [
    ("", ValueError, "must not be empty"),
    (None, TypeError, "must be a str, not NoneType"),
    (42, TypeError, "must be a str, not int"),
    (b"bytes", TypeError, "must be a str, not bytes"),
    ("s" * 256, ValueError, "256 characters long; the limit is 255"),
    ("a\x00b", ValueError, "must not contain NUL"),
    ("alice ", ValueError, "ends with a space; MySQL and MariaDB cannot tell it"),
]

BAD_ITEMS = [
    ({"role": "user"}, TypeError, "items must be a list of dicts, not dict"),
    ("hello", TypeError, "items must be a list of dicts, not str"),
    (None, TypeError, "items must be a list of dicts, not NoneType"),
    (({"a": 1},), TypeError, "items must be a list of dicts, not tuple"),
    ([{"ok": 1}, "text"], TypeError, r"items\[1\] must be a dict, not str"),
    ([{"ok": 1}, None], TypeError, r"items\[1\] must be a dict, not NoneType"),
    ([["role", "user"]], TypeError, r"items\[0\] must be a dict, not list"),
    ([{"when": object()}], InvalidItemError, r"items\[0\] is not valid JSON"),
    ([{"set": {1, 2}}], InvalidItemError, r"items\[0\] is not valid JSON"),
    ([{"raw": b"\x00\x01"}], InvalidItemError, r"items\[0\] is not valid JSON"),
    ([{(1, 2): "tuple key"}], InvalidItemError, r"items\[0\] is not valid JSON"),
    ([{"ok": 1}, {"x": math.nan}], InvalidItemError, r"items\[1\] is not valid JSON"),
    ([{"x": math.inf}], InvalidItemError, r"items\[0\] is not valid JSON"),
    ([{"x": [-math.inf]}], InvalidItemError, r"items\[0\] is not valid JSON"),
    ([{"ok": 1}, nested(100_000)], InvalidItemError, r"items\[1\] is nested too deeply"),
]

BAD_LIMITS = [
    (-1, ValueError, "limit must be >= 0, got -1"),
    (True, TypeError, "limit must be an int or None, not bool"),
    (2.5, TypeError, "limit must be an int or None, not float"),
    ("3", TypeError, "limit must be an int or None, not str"),
]


async def snapshot(store: SessionStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every table in the database with all its rows."""
    async with store.engine.connect() as conn:
        metadata = MetaData()
        await conn.run_sync(metadata.reflect)
        return {
            name: sorted(tuple(row) for row in (await conn.execute(select(table))).all())
            for name, table in metadata.tables.items()
        }


async def _rejects(
    store: SessionStore, call: Callable[[], Awaitable[Any]], error: type[Exception], match: str
) -> None:
    before = await snapshot(store)
    with pytest.raises(error, match=match):
        await call()
    assert await snapshot(store) == before


@pytest.fixture
async def seeded(store: SessionStore) -> SessionStore:
    await store.session("seed").add_items([{"role": "user", "content": "keep me"}])
    return store


@pytest.mark.parametrize(("name", "match"), BAD_TABLE_NAMES, ids=short)
@pytest.mark.parametrize("which", ["sessions_table", "messages_table"])
async def test_table_names_that_are_not_identifiers_raise_invalid_identifier_error(
    seeded: SessionStore, db_url: str, name: Any, match: str, which: str
) -> None:
    async def build() -> None:
        async with SessionStore(db_url, **{which: name}) as other:
            await other.create_tables()

    await _rejects(seeded, build, InvalidIdentifierError, match)


@pytest.mark.parametrize(("session_id", "error", "match"), BAD_SESSION_IDS, ids=short)
async def test_bad_session_ids_raise_a_specific_error_and_change_nothing(
    seeded: SessionStore, session_id: Any, error: type[Exception], match: str
) -> None:
    for call in (
        lambda: seeded.add_items(session_id, [{"a": 1}]),
        lambda: seeded.get_items(session_id),
        lambda: seeded.pop_item(session_id),
        lambda: seeded.clear_session(session_id),
    ):
        await _rejects(seeded, call, error, match)
    with pytest.raises(error, match=match):
        SQLAlchemySession(session_id, store=seeded)


@pytest.mark.parametrize(("items", "error", "match"), BAD_ITEMS, ids=short)
async def test_bad_items_raise_a_specific_error_and_store_nothing(
    seeded: SessionStore, items: Any, error: type[Exception], match: str
) -> None:
    await _rejects(seeded, lambda: seeded.session("seed").add_items(items), error, match)
    await _rejects(seeded, lambda: seeded.session("new").add_items(items), error, match)


@pytest.mark.parametrize(("limit", "error", "match"), BAD_LIMITS, ids=short)
async def test_bad_limits_raise_a_specific_error(
    seeded: SessionStore, limit: Any, error: type[Exception], match: str
) -> None:
    await _rejects(seeded, lambda: seeded.session("seed").get_items(limit), error, match)
    with pytest.raises(error, match=match):
        SQLAlchemySession("s", store=seeded, session_settings={"limit": limit})
        await SQLAlchemySession("s", store=seeded, session_settings={"limit": limit}).get_items()


async def test_lone_surrogates_in_item_text_round_trip(seeded: SessionStore) -> None:
    item = {"content": "half a pair: \ud83d, and a whole one: \U0001f600"}
    await seeded.session("s").add_items([item])
    assert await seeded.session("s").get_items() == [item]


async def _from_deep_stack(frames: int, call: Callable[[], Awaitable[Any]]) -> Any:
    if frames == 0:
        return await call()
    return await _from_deep_stack(frames - 1, call)


async def test_the_deepest_item_accepted_reads_back_even_from_a_deep_call_stack(
    seeded: SessionStore,
) -> None:
    depth = 1000
    while True:  # the deepest nesting the encoder accepts from here
        try:
            await seeded.session("deep").add_items([nested(depth)])
            break
        except InvalidItemError:
            depth -= 10
    await seeded.session("deep").add_items([nested(depth)])
    item = nested(depth)

    # An agent framework may read from far deeper in the stack than it wrote from.
    assert await _from_deep_stack(300, seeded.session("deep").get_items) == [item, item]
    assert await _from_deep_stack(300, seeded.session("deep").pop_item) == item
    assert await seeded.session("deep").get_items() == [item]


async def test_a_twenty_megabyte_item_round_trips_or_fails_clearly_naming_the_limit(
    seeded: SessionStore, figures: Figures, request: pytest.FixtureRequest
) -> None:
    item = {"role": "user", "content": "x" * (20 * 1024 * 1024 - 40) + "\"quoted\" 'é' 😀"}
    session = seeded.session("huge")
    before = await snapshot(seeded)
    started = time.perf_counter()
    try:
        await session.add_items([item])
    except ItemTooLargeError as exc:
        assert "max_allowed_packet = " in str(exc)
        assert "Nothing was stored" in str(exc)
        assert await snapshot(seeded) == before
        outcome = "refused"
    else:
        assert await session.get_items() == [item]
        assert await session.pop_item() == item
        outcome = "stored"
    # A clear refusal leaves the store as usable as a success does.
    await session.add_items([{"after": "huge"}])
    assert await session.get_items() == [{"after": "huge"}]
    figures.add(
        f"20 MB item ({outcome})",
        database_of(request),
        runs=1,
        items=int(outcome == "stored"),
        seconds=time.perf_counter() - started,
        note="seconds: add, read back and pop" if outcome == "stored" else "ItemTooLargeError",
    )


@pytest.mark.parametrize(
    "db_url", [p for p in ALL_KINDS if p.values[0] == "mariadb"], indirect=True
)
async def test_an_item_just_under_max_allowed_packet_is_stored_and_one_just_over_is_refused(
    store: SessionStore,
) -> None:
    async with store.engine.connect() as conn:
        limit = int((await conn.execute(text("SELECT @@max_allowed_packet"))).scalar_one())
    session = store.session("edge")
    fits = {"content": "y" * (limit - 2048)}
    await session.add_items([fits])
    assert await session.get_items() == [fits]

    with pytest.raises(ItemTooLargeError, match=f"max_allowed_packet = {limit} bytes"):
        await session.add_items([{"a": 1}, {"content": "y" * limit}])
    assert await session.get_items() == [fits]


LONG_USER = "u" * 256  # one past the user_id column's VARCHAR(255)
OWNER_ENTRIES: dict[str, Callable[[SessionStore], Awaitable[Any]]] = {
    "list_sessions": lambda store: store.list_sessions(user_id=LONG_USER),
    "info": lambda store: store.info("seed", user_id=LONG_USER),
    "records.update": lambda store: store.records.update("new", LONG_USER, title="t"),
    "erase_user": lambda store: store.erase_user(LONG_USER),
    "fork": lambda store: store.fork("seed", "copy", user_id=LONG_USER),
    "record_usage": lambda store: store.record_usage(
        "seed", {"input_tokens": 1, "output_tokens": 1}, model="m", user_id=LONG_USER
    ),
    "usage": lambda store: store.usage(user_id=LONG_USER),
    "restore": lambda store: store.restore("seed", user_id=LONG_USER),
}


@pytest.mark.parametrize("entry", OWNER_ENTRIES)
async def test_a_user_id_longer_than_its_column_is_refused_before_any_statement(
    seeded: SessionStore, entry: str
) -> None:
    """Not truncated, not a driver's "too long" error, not a filter silently matching nothing."""
    before = await snapshot(seeded)
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(seeded.engine.sync_engine, "before_cursor_execute", listener)
    try:
        with pytest.raises(InvalidArgumentError, match="user_id is 256 characters long; the limit"):
            await OWNER_ENTRIES[entry](seeded)
    finally:
        event.remove(seeded.engine.sync_engine, "before_cursor_execute", listener)
    assert statements == []
    assert await snapshot(seeded) == before


async def test_a_handle_for_a_too_long_user_id_is_refused_and_255_characters_round_trip(
    seeded: SessionStore,
) -> None:
    with pytest.raises(InvalidArgumentError, match="user_id is 256 characters long"):
        seeded.session("s", user_id=LONG_USER)
    longest = "ü" * 255  # multi-byte too: the limit is in characters on every database
    await seeded.session("s", user_id=longest).add_items([{"n": 1}])
    (record,) = (await seeded.list_sessions(user_id=longest)).sessions
    assert (record.session_id, record.user_id) == ("s", longest)
    assert (await seeded.erase_user(longest)).sessions == 1
