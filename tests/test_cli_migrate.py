"""The migration commands (upgrade, downgrade, current, check) through click's runner."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, column, inspect, table, update
from sqlalchemy.ext.asyncio import create_async_engine

from agent_session_store import migrate
from agent_session_store._migration import dropped_by
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
    refused = fails("downgrade", "base", "--url", url, match="run again with --yes").stderr
    for name in ("agent_messages_keys", "agent_sessions_usage", "agent_messages_archive",
                 "agent_sessions", "agent_messages"):  # all five tables base drops
        assert f"table {name!r}" in refused
    assert "columns" not in refused  # those of a table it drops go with the table
    assert items_of(url, "s1") == ITEMS


def test_a_revision_given_by_its_number_is_ours_of_that_number(url: str) -> None:
    # `downgrade 0004` is what a person types after reading `current`; Alembic knows the
    # revision only as agent_session_store_0004 and said "Can't locate revision '0004'".
    ok("upgrade", "--url", url)
    refused = fails("downgrade", "0004", "--url", url, match="run again with --yes").stderr
    assert "downgrade agent_session_store_0004" in refused
    assert "idempotency keys" in refused
    moved = ok("downgrade", "3", "--url", url, "--yes").stdout
    assert moved.strip().endswith("is at revision agent_session_store_0003")
    again = ok("upgrade", "0004", "--url", url).stdout
    assert again.strip().endswith("is at revision agent_session_store_0004")
    assert ok("upgrade", "--url", url).stdout.strip().endswith(migrate.head_revision())


def schema(url: str) -> dict[str, set[str]]:
    """Our tables (not the version table) and their columns, as the database has them."""

    def read(conn: Connection) -> dict[str, set[str]]:
        found = inspect(conn)
        return {
            name: {c["name"] for c in found.get_columns(name)}
            for name in found.get_table_names()
            if not name.endswith("alembic_version")
        }

    async def run() -> dict[str, set[str]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_every_downgrade_step_refuses_without_yes_naming_exactly_what_it_then_drops(
    url: str,
) -> None:
    """Step by step from head to base: the refusal names every table and column that the
    step with --yes then drops, and nothing else; without --yes nothing changes."""
    ok("upgrade", "--url", url)
    script = ScriptDirectory(migrate._script_location())
    revisions = [rev.revision for rev in script.walk_revisions()]  # head first, every one
    assert revisions[0] == migrate.head_revision() and len(revisions) >= 5
    for current, below in zip(revisions, [*revisions[1:], "base"], strict=True):
        before = schema(url)
        refused = fails("downgrade", below, "--url", url, match="run again with --yes").stderr
        assert schema(url) == before
        assert ok("current", "--url", url).stdout.startswith(f"current: {current}")
        ok("downgrade", below, "--yes", "--url", url)
        after = schema(url)
        tables = set(before) - set(after)
        columns = {(t, c) for t in after for c in before[t] - after[t]}
        named = dropped_by(current, "agent_sessions", "agent_messages")
        assert {d.table for d in named if not d.columns} == tables, current
        assert {(d.table, c) for d in named for c in d.columns} == columns, current
        for drop in named:
            assert str(drop) in refused
        assert set(after) <= set(before)


def test_a_downgrade_of_several_steps_names_what_each_drops_and_yes_runs_it(url: str) -> None:
    ok("upgrade", "--url", url)
    fill(url, {"s1": ITEMS})
    refused = fails("downgrade", "agent_session_store_0002", "--url", url,
                    match="run again with --yes").stderr
    for part in ("table 'agent_messages_keys' (idempotency keys)",
                 "table 'agent_sessions_usage' (usage rows)",
                 "table 'agent_messages_archive' (archived items)",
                 "columns forked_from_item_id, forked_from_session_id of 'agent_sessions'"):
        assert part in refused
    assert "owners" not in refused  # revision 0002's columns stay
    assert set(schema(url)) == {"agent_sessions", "agent_messages", "agent_messages_keys",
                                "agent_sessions_usage", "agent_messages_archive"}
    ok("downgrade", "agent_session_store_0002", "--yes", "--url", url)
    assert set(schema(url)) == {"agent_sessions", "agent_messages"}
    assert ok("downgrade", "agent_session_store_0002", "--url", url)  # no step: nothing to ask


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
