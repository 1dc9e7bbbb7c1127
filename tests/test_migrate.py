"""The shipped migrations: upgrade, downgrade, current and check, on every server dialect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, inspect, table, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import agent_session_store
from agent_session_store import (
    InvalidIdentifierError,
    MigrationError,
    SchemaOutOfDateError,
    SessionStore,
    check,
    current,
    downgrade,
    upgrade,
)
from agent_session_store.migrate import alembic_options, configured_tables, head_revision

ROOT = Path(__file__).resolve().parents[1]
CUSTOM = {"sessions_table": "chat_sessions", "messages_table": "chat_messages"}


async def table_names(url: str) -> set[str]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("names", [{}, CUSTOM], ids=["default_names", "custom_names"])
async def test_upgrade_creates_tables_that_check_finds_identical_to_the_models(
    shared_db_url: str, names: dict[str, str]
) -> None:
    await upgrade(shared_db_url, **names)
    assert await current(shared_db_url, **names) == head_revision()
    await check(shared_db_url, **names)  # autogenerate comparison: no difference
    sessions = names.get("sessions_table", "agent_sessions")
    messages = names.get("messages_table", "agent_messages")
    archive = f"{messages}_archive"
    assert await table_names(shared_db_url) == {
        sessions, messages, archive, f"{messages}_keys", f"{sessions}_alembic_version"
    }


async def test_upgrade_downgrade_base_upgrade_round_trips_with_custom_names(
    shared_db_url: str,
) -> None:
    await upgrade(shared_db_url, **CUSTOM)
    async with SessionStore(shared_db_url, **CUSTOM) as store:
        await store.session("s").add_items([{"n": 1}])
    await downgrade(shared_db_url, "base", **CUSTOM)
    assert await current(shared_db_url, **CUSTOM) is None
    assert await table_names(shared_db_url) == {"chat_sessions_alembic_version"}
    await upgrade(shared_db_url, **CUSTOM)
    await check(shared_db_url, **CUSTOM)
    async with SessionStore(shared_db_url, **CUSTOM) as store:
        session = store.session("s")
        assert await session.get_items() == []
        await session.add_items([{"n": 2}, {"n": 3}])
        assert await session.pop_item() == {"n": 3}
        assert await session.get_items() == [{"n": 2}]


async def test_two_table_pairs_keep_separate_version_rows_in_one_database(
    shared_db_url: str,
) -> None:
    await upgrade(shared_db_url)
    await upgrade(shared_db_url, **CUSTOM)
    await downgrade(shared_db_url, "base")
    assert await current(shared_db_url) is None
    assert await current(shared_db_url, **CUSTOM) == head_revision()
    await check(shared_db_url, **CUSTOM)


async def test_upgrade_twice_is_a_no_op_keeping_rows(shared_db_url: str) -> None:
    await upgrade(shared_db_url)
    async with SessionStore(shared_db_url) as store:
        await store.session("s").add_items([{"n": 1}])
    await upgrade(shared_db_url)
    async with SessionStore(shared_db_url) as store:
        assert await store.session("s").get_items() == [{"n": 1}]


async def test_check_names_found_and_needed_revision_and_the_command_when_behind(
    shared_db_url: str,
) -> None:
    with pytest.raises(SchemaOutOfDateError) as info:
        await check(shared_db_url, **CUSTOM)
    message = str(info.value)
    assert "no agent-session-store revision" in message
    assert head_revision() in message
    assert "agent-session-store upgrade --url" in message
    assert "--sessions-table chat_sessions --messages-table chat_messages" in message


async def test_check_reports_a_revision_the_package_does_not_know(shared_db_url: str) -> None:
    await upgrade(shared_db_url)
    engine = create_async_engine(shared_db_url, poolclass=NullPool)
    version = table("agent_sessions_alembic_version", column("version_num"))
    async with engine.begin() as conn:
        await conn.execute(version.update().values(version_num="agent_session_store_9999"))
    await engine.dispose()
    with pytest.raises(SchemaOutOfDateError, match=r"agent_session_store_9999.*does not know"):
        await check(shared_db_url)


async def test_check_reports_schema_drift_at_head(shared_db_url: str) -> None:
    await upgrade(shared_db_url)
    engine = create_async_engine(shared_db_url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE INDEX ix_extra ON agent_messages (created_at)"))
        await conn.execute(text("ALTER TABLE agent_sessions ADD COLUMN extra INTEGER"))
    await engine.dispose()
    with pytest.raises(SchemaOutOfDateError) as info:
        await check(shared_db_url)
    assert "remove_column agent_sessions.extra" in str(info.value)
    assert "remove_index ix_extra" in str(info.value)


async def test_store_with_check_schema_refuses_a_database_behind_then_works_after_upgrade(
    shared_db_url: str,
) -> None:
    async with SessionStore(shared_db_url, check_schema=True) as store:
        with pytest.raises(SchemaOutOfDateError, match=f"package needs {head_revision()}"):
            await store.session("s").get_items()
        with pytest.raises(SchemaOutOfDateError):
            await store.session("s").add_items([{"n": 1}])
        assert await table_names(shared_db_url) == set()  # nothing migrated behind our back
        await upgrade(store.engine)
        await store.session("s").add_items([{"n": 1}])
        assert await store.session("s").get_items() == [{"n": 1}]


async def test_store_without_check_schema_does_not_look_at_the_version_row(
    shared_db_url: str,
) -> None:
    async with SessionStore(shared_db_url) as store:
        await store.create_tables()
        await store.session("s").add_items([{"n": 1}])
        assert await current(store.engine) is None


async def test_upgrade_uses_agent_session_store_url_when_given_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("AGENT_SESSION_STORE_URL", url)
    await agent_session_store.upgrade()
    assert await agent_session_store.current() == head_revision()
    assert await current(url) == head_revision()


def run_alembic(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


async def test_alembic_cli_from_the_repository_root_takes_url_and_table_names_from_x_args(
    shared_db_url: str,
) -> None:
    args = [
        "-x",
        f"url={shared_db_url}",
        "-x",
        "sessions_table=chat_sessions",
        "-x",
        "messages_table=chat_messages",
    ]
    run_alembic(*args, "upgrade", "head", cwd=ROOT)
    await check(shared_db_url, **CUSTOM)
    assert head_revision() in run_alembic(*args, "current", cwd=ROOT)
    assert "No new upgrade operations detected" in run_alembic(*args, "check", cwd=ROOT)
    run_alembic(*args, "downgrade", "base", cwd=ROOT)
    assert await current(shared_db_url, **CUSTOM) is None


def test_alembic_cli_defaults_to_the_env_url_then_the_embedded_sqlite_file(
    tmp_path: Path,
) -> None:
    env_db = tmp_path / "from_env.db"
    env = {"AGENT_SESSION_STORE_URL": f"sqlite+aiosqlite:///{env_db}"}
    run_alembic("-c", str(ROOT / "alembic.ini"), "upgrade", "head", cwd=tmp_path, env=env)
    assert env_db.exists()
    plain = {k: v for k, v in os.environ.items() if k != "AGENT_SESSION_STORE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        cwd=tmp_path,
        env=plain,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "agent_sessions.db").exists()


def test_offline_sql_mode_renders_the_create_statements() -> None:
    out = run_alembic(
        "-x", "sessions_table=a_s", "-x", "messages_table=a_m", "upgrade", "head", "--sql", cwd=ROOT
    )
    assert "CREATE TABLE a_s" in out and "CREATE TABLE a_m" in out
    assert "CREATE INDEX idx_a_m_session_id" in out
    assert "INSERT INTO a_s_alembic_version" in out


async def test_bad_table_names_are_refused_before_anything_runs(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(InvalidIdentifierError, match="sessions_table"):
        await upgrade(url, sessions_table="chat; DROP TABLE x")
    with pytest.raises(InvalidIdentifierError, match="must differ"):
        await upgrade(url, sessions_table="same", messages_table="same")
    assert await table_names(url) == set()


def test_revisions_refuse_unknown_keys_in_the_table_names_option() -> None:
    context = MigrationContext.configure(
        dialect_name="sqlite", opts=alembic_options(sessions_table="a", messages_table="b")
    )
    assert configured_tables(context) == ("a", "b")
    typo = MigrationContext.configure(
        dialect_name="sqlite", opts={"agent_session_store_tables": {"session_table": "a"}}
    )
    with pytest.raises(MigrationError, match="session_table"):
        configured_tables(typo)
