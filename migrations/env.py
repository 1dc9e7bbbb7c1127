"""Alembic environment of agent-session-store (standalone runs and the programmatic API).

Where things come from, first match wins:

- connection: ``config.attributes["connection"]`` (the programmatic API shares its own), else
  an engine built from ``-x url=...``, ``AGENT_SESSION_STORE_URL``, ``sqlalchemy.url`` in the
  ini file, or the embedded default ``sqlite+aiosqlite:///agent_sessions.db``;
- table names: ``config.attributes["sessions_table"/"messages_table"]``, else
  ``-x sessions_table=... -x messages_table=...``, else the defaults.

The version row lives in ``<sessions_table>_alembic_version``, never in a host's
``alembic_version``. A host application includes our revisions from its own env.py instead
(see docs/migrations.md).
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import _dialect, _migration

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

x_args = context.get_x_argument(as_dictionary=True)
SESSIONS_TABLE, MESSAGES_TABLE = _migration.table_names(
    config.attributes.get("sessions_table") or x_args.get("sessions_table"),
    config.attributes.get("messages_table") or x_args.get("messages_table"),
)
VERSION_TABLE = _migration.version_table(SESSIONS_TABLE)


def configure_options() -> dict[str, Any]:
    return {
        "target_metadata": _migration.target_metadata(SESSIONS_TABLE, MESSAGES_TABLE),
        "include_name": _migration.include_only(
            *_migration.store_tables(SESSIONS_TABLE, MESSAGES_TABLE)
        ),
        "version_table": VERSION_TABLE,
        "transaction_per_migration": True,
        "compare_type": True,
        _migration.TABLES_OPTION: {
            "sessions_table": SESSIONS_TABLE,
            "messages_table": MESSAGES_TABLE,
        },
    }


def database_url() -> str:
    return (
        x_args.get("url")
        or os.environ.get("AGENT_SESSION_STORE_URL")
        or config.get_main_option("sqlalchemy.url")
        or _dialect.DEFAULT_URL
    )


def run_migrations_offline() -> None:
    url = _dialect.async_url(database_url())
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.get_backend_name() == "sqlite",
        **configure_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    with _migration.migration_lock(connection, VERSION_TABLE):
        context.configure(
            connection=connection,
            render_as_batch=connection.dialect.name == "sqlite",
            **configure_options(),
        )
        with context.begin_transaction():
            context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(_dialect.async_url(database_url()), poolclass=NullPool)
    _dialect.configure_sqlite(engine.sync_engine)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
