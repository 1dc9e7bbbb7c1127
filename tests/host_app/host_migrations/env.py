"""The host application's env.py: one version table (alembic_version), its tables and ours."""

import asyncio
from logging.config import fileConfig

from alembic import context
from models import MESSAGES_TABLE, SESSIONS_TABLE, Base
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store.migrate import alembic_options, migration_lock

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)
URL = context.get_x_argument(as_dictionary=True)["url"]


def do_run_migrations(connection: Connection) -> None:
    # One process at a time; on SQLite also foreign keys off while tables are rebuilt.
    with migration_lock(connection, "alembic_version"):
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            transaction_per_migration=True,
            compare_type=True,
            # Our revisions read the table names from here.
            **alembic_options(sessions_table=SESSIONS_TABLE, messages_table=MESSAGES_TABLE),
        )
        with context.begin_transaction():
            context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(URL, poolclass=NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("this sample runs online only")
asyncio.run(run_async_migrations())
