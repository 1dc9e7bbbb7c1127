"""The migration commands (upgrade, downgrade, current, check) through click's runner."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import column, table, update
from sqlalchemy.ext.asyncio import create_async_engine

from agent_session_store import migrate
from agent_session_store.errors import (
    MigrationError,
    SchemaOutOfDateError,
)

from .test_cli import (  # noqa: F401 - fixtures used here too
    ITEMS,
    clean_env_fixture,
    fails,
    fill,
    invoke,
    items_of,
    ok,
    url_fixture,
)


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


def touch(url: str) -> None:
    """Create the SQLite file of ``url`` (empty), as a database that exists but has no tables."""
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[1]).touch()


def test_current_on_an_empty_database_says_to_upgrade_with_its_url(url: str) -> None:
    touch(url)
    out = ok("current", "--url", url).stdout
    assert "current: none (run: agent-session-store upgrade --url '" in out


def test_check_on_a_database_never_upgraded_is_a_one_line_error(url: str) -> None:
    touch(url)
    with pytest.raises(SchemaOutOfDateError) as raised:
        asyncio.run(migrate.check(url))
    fails("check", "--url", url, match=str(raised.value).splitlines()[0])


def test_downgrade_to_base_removes_the_tables_and_sessions_says_to_upgrade(url: str) -> None:
    ok("upgrade", "--url", url)
    assert "base (no tables)" in ok("downgrade", "base", "--yes", "--url", url).stdout
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


def test_downgrade_base_without_yes_refuses_and_keeps_every_session(url: str) -> None:
    ok("upgrade", "--url", url)
    fill(url, {"s1": ITEMS})
    fails("downgrade", "base", "--url", url, match="run again with --yes")
    assert items_of(url, "s1") == ITEMS


def test_check_exits_1_when_behind_and_3_when_it_cannot_look(url: str) -> None:
    touch(url)
    fails("check", "--url", url, match="run: agent-session-store upgrade", code=1)
    fails("check", "--url", "postgresql://postgres@127.0.0.1:9/x", match="cannot reach", code=3)
    verdict = json.loads(invoke("check", "--url", url, "--json").stdout)
    assert verdict["up_to_date"] is False and "upgrade" in verdict["problem"]
    ok("upgrade", "--url", url)
    assert json.loads(ok("check", "--url", url, "--json").stdout)["up_to_date"] is True


def test_current_json_gives_both_revisions(url: str) -> None:
    ok("upgrade", "--url", url)
    found = json.loads(ok("current", "--url", url, "--json").stdout)
    head = migrate.head_revision()
    assert (found["current"], found["head"], found["up_to_date"]) == (head, head, True)


@pytest.mark.parametrize("command", ["current", "check", "sessions"])
def test_looking_at_a_typoed_sqlite_path_fails_without_creating_the_file(
    command: str, tmp_path: Path
) -> None:
    fails(command, "--url", "sqlite:///typo.db", match="no database file 'typo.db'", code=3)
    assert not (tmp_path / "typo.db").exists()


@pytest.mark.sqlite
def test_migrate_current_and_check_on_a_missing_sqlite_file_leave_it_missing(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'typo.db'}"
    assert asyncio.run(migrate.current(url)) is None
    with pytest.raises(SchemaOutOfDateError, match=r"no database file .*typo\.db' \(not created"):
        asyncio.run(migrate.check(url))
    assert not (tmp_path / "typo.db").exists()


@pytest.mark.sqlite
def test_a_host_revision_left_among_ours_is_reported_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(migrate._script_location(), tmp_path / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "migrations" / "versions" / "abc123_host.py").write_text(
        'revision = "abc123"\ndown_revision = "agent_session_store_0001"\n'
        "branch_labels = None\ndepends_on = None\n", "utf-8",
    )
    monkeypatch.setattr(migrate, "_script_location", lambda: str(tmp_path / "migrations"))
    with pytest.raises(MigrationError, match=r"abc123_host\.py.*--branch-label"):
        migrate.head_revision.__wrapped__()
