"""A host application whose own Alembic environment upgrades its tables and ours together."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import column, inspect, select, table
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import SchemaOutOfDateError, SessionStore, check, current
from agent_session_store.migrate import head_revision

HOST_APP = Path(__file__).resolve().parent / "host_app"
NAMES = {"sessions_table": "chat_sessions", "messages_table": "chat_messages"}


def host_alembic(url: str, *args: str, python: str = sys.executable, cwd: Path = HOST_APP) -> str:
    """Run the host's alembic the way its developers would, from their project folder."""
    result = subprocess.run(
        [python, "-m", "alembic", "-c", str(cwd / "alembic.ini"), "-x", f"url={url}", *args],
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "AGENT_SESSION_STORE_URL"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


async def assert_host_schema_at_heads(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.connect() as conn:
        names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        version = table("alembic_version", column("version_num"))
        heads = set((await conn.execute(select(version.c.version_num))).scalars())
    await engine.dispose()
    ours = {"chat_sessions", "chat_messages", "chat_messages_archive"}
    assert names == {"users", "chat_tags", "alembic_version", *ours}
    # One version table. host_0002 depends on our first revision, so Alembic keeps its row in
    # place of ours until our branch moves past that revision: then our head has a row too.
    assert heads == {"host_0002", head_revision()}
    await check(url, **NAMES)  # judged by comparing our tables with the models


async def test_host_alembic_upgrade_heads_creates_its_tables_and_ours(shared_db_url: str) -> None:
    host_alembic(shared_db_url, "upgrade", "heads")
    await assert_host_schema_at_heads(shared_db_url)
    # The host's autogenerate sees our models on its base and finds nothing to do.
    assert "No new upgrade operations detected" in host_alembic(shared_db_url, "check")
    async with SessionStore(shared_db_url, **NAMES) as store:
        await store.session("s").add_items([{"n": 1}])
        assert await store.session("s").get_items() == [{"n": 1}]
    async with SessionStore(shared_db_url, check_schema=True, **NAMES) as store:
        assert await store.session("s").get_items() == [{"n": 1}]


async def test_check_in_a_host_database_without_our_tables_says_what_to_run(
    shared_db_url: str,
) -> None:
    host_alembic(shared_db_url, "upgrade", "host_0001")
    with pytest.raises(SchemaOutOfDateError, match=f"package needs {head_revision()}"):
        await check(shared_db_url, **NAMES)


async def test_host_downgrade_base_then_upgrade_heads_round_trips(shared_db_url: str) -> None:
    host_alembic(shared_db_url, "upgrade", "heads")
    host_alembic(shared_db_url, "downgrade", "base")
    assert await current(shared_db_url, **NAMES) is None
    host_alembic(shared_db_url, "upgrade", "agent_session_store@head")
    assert await current(shared_db_url, **NAMES) == head_revision()  # our row, by branch label
    host_alembic(shared_db_url, "upgrade", "heads")
    await assert_host_schema_at_heads(shared_db_url)
