"""A later revision altering our tables with batch mode: works on SQLite, keeps every row."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import SessionStore, check, upgrade
from agent_session_store.migrate import _script_location, head_revision

NAMES = {"sessions_table": "chat_sessions", "messages_table": "chat_messages"}

# Alters the *parent* table: on SQLite batch mode copies and drops it, which would
# cascade-delete every message if foreign keys were on during the migration.
LATER_REVISION = """
import sqlalchemy as sa
from alembic import op
from agent_session_store.migrate import configured_tables

revision = "later_0002"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    sessions, _ = configured_tables(op.get_context())
    with op.batch_alter_table(sessions) as batch:
        batch.add_column(sa.Column("note", sa.String(100), nullable=True))
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True),
                           nullable=True)


def downgrade():
    sessions, _ = configured_tables(op.get_context())
    with op.batch_alter_table(sessions) as batch:
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True),
                           nullable=False)
        batch.drop_column("note")
"""


def config_with(extra_versions: Path, connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", _script_location())
    config.set_main_option("path_separator", "os")
    locations = [f"{_script_location()}/versions", str(extra_versions)]
    config.set_main_option("version_locations", os.pathsep.join(locations))
    config.attributes.update(connection=connection, **NAMES)
    return config


async def test_a_later_batch_revision_alters_the_parent_table_and_keeps_every_message(
    shared_db_url: str, tmp_path: Path
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "later_0002.py").write_text(LATER_REVISION.format(head=head_revision()))
    await upgrade(shared_db_url, **NAMES)
    async with SessionStore(shared_db_url, **NAMES) as store:
        await store.session("a").add_items([{"n": i} for i in range(5)])
        await store.session("b").add_items([{"n": 9}])

    engine = create_async_engine(shared_db_url, poolclass=NullPool)
    async with engine.connect() as conn:
        await conn.run_sync(lambda c: command.upgrade(config_with(versions, c), "heads"))
        columns = await conn.run_sync(lambda c: inspect(c).get_columns("chat_sessions"))
    assert "note" in {c["name"] for c in columns}

    async with SessionStore(engine, **NAMES) as store:
        assert await store.session("a").get_items() == [{"n": i} for i in range(5)]
        assert await store.session("b").get_items() == [{"n": 9}]

    async with engine.connect() as conn:
        await conn.run_sync(lambda c: command.downgrade(config_with(versions, c), head_revision()))
    await check(engine, **NAMES)
    async with SessionStore(engine, **NAMES) as store:
        assert await store.session("a").get_items() == [{"n": i} for i in range(5)]
    await engine.dispose()
