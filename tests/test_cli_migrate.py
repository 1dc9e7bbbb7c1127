"""The migration commands (upgrade, downgrade, current, check) through click's runner."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import column, table, update
from sqlalchemy.ext.asyncio import create_async_engine

from agent_session_store import migrate
from agent_session_store.errors import SchemaOutOfDateError

from .test_cli import ITEMS, clean_env_fixture, fails, fill, items_of, ok, url_fixture  # noqa: F401 - fixtures used here too


def test_upgrade_creates_the_schema_at_head_and_current_and_check_agree(url: str) -> None:
    head = migrate.head_revision()
    assert head in ok("upgrade", "--url", url).stdout
    current = ok("current", "--url", url).stdout
    assert f"current: {head}" in current and f"head:    {head}" in current
    assert head in ok("check", "--url", url).stdout
    assert "no sessions" in ok("sessions", "--url", url).stdout


def test_upgrade_twice_changes_nothing_and_keeps_history(url: str) -> None:
    ok("upgrade", "--url", url)
    fill(url, {"s1": ITEMS})
    ok("upgrade", "--url", url)
    assert items_of(url, "s1") == ITEMS


def test_current_on_an_empty_database_says_to_upgrade(url: str) -> None:
    out = ok("current", "--url", url).stdout
    assert "current: none (run: agent-session-store upgrade)" in out


def test_check_on_a_database_never_upgraded_is_a_one_line_error(url: str) -> None:
    with pytest.raises(SchemaOutOfDateError) as raised:
        asyncio.run(migrate.check(url))
    fails("check", "--url", url, match=str(raised.value).splitlines()[0])


def test_downgrade_to_base_removes_the_tables_and_sessions_says_to_upgrade(url: str) -> None:
    ok("upgrade", "--url", url)
    assert "base (no tables)" in ok("downgrade", "base", "--url", url).stdout
    fails("sessions", "--url", url, match="run: agent-session-store upgrade --url")
    ok("upgrade", "--url", url)
    assert json.loads(ok("sessions", "--url", url, "--json").stdout)["sessions"] == []


def test_sessions_on_a_schema_the_package_does_not_know_is_a_one_line_error(url: str) -> None:
    ok("upgrade", "--url", url)
    version = table("agent_sessions_alembic_version", column("version_num"))

    async def tamper() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(update(version).values(version_num="agent_session_store_9999"))
        await engine.dispose()

    asyncio.run(tamper())
    fails("sessions", "--url", url, match="database at revision agent_session_store_9999")
    fails("check", "--url", url, match="database at revision agent_session_store_9999")


def test_import_into_sdk_made_tables_adopts_them(url: str) -> None:
    fill(url, {"s1": ITEMS})  # create_tables(), as the SDK's sessions do: no revision
    assert "current: none" in ok("current", "--url", url).stdout
    ok("export", "--url", url, "-o", "s1.jsonl")
    ok("import", "s1.jsonl", "--url", url)
    assert f"current: {migrate.head_revision()}" in ok("current", "--url", url).stdout
    assert items_of(url, "s1") == ITEMS


def test_demo_upgrades_an_empty_database_first(url: str) -> None:
    pytest.importorskip("agents")
    ok("demo", "--url", url)
    assert ok("current", "--url", url).stdout.startswith(f"current: {migrate.head_revision()}")
