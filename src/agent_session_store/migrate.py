"""The shipped Alembic migrations as an async Python API: upgrade, downgrade, current, check.

Each function takes an ``AsyncEngine`` (left open) or a URL (an engine is made and disposed);
with neither it uses ``AGENT_SESSION_STORE_URL``, else ``sqlite+aiosqlite:///agent_sessions.db``.
The version row lives in ``<sessions_table>_alembic_version``; :func:`current` and :func:`check`
also find it in a host application's ``alembic_version`` when our revisions run from there.
When a host revision depends on ours, Alembic keeps only the host's row: :func:`current` and
:func:`check` then judge by comparing the tables with the models, and agree.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import _dialect, _migration
from agent_session_store._migration import migration_lock
from agent_session_store.errors import (
    MigrationError,
    SchemaOutOfDateError,
)
from agent_session_store.models import (
    DEFAULT_MESSAGES_TABLE,
    DEFAULT_SESSIONS_TABLE,
)

__all__ = [
    "alembic_options",
    "check",
    "configured_tables",
    "current",
    "downgrade",
    "head_revision",
    "host_heads",
    "migration_lock",
    "upgrade",
]

URL_ENV = "AGENT_SESSION_STORE_URL"
#: Where a host application's Alembic finds our revisions (``version_locations``).
VERSION_LOCATIONS = "agent_session_store.migrations:versions"
_REVISION_PREFIX = "agent_session_store_"
_HOST_VERSION_TABLE = "alembic_version"

EngineOrUrl = AsyncEngine | str | URL | None


async def upgrade(
    engine_or_url: EngineOrUrl = None,
    revision: str = "head",
    *,
    sessions_table: str = DEFAULT_SESSIONS_TABLE,
    messages_table: str = DEFAULT_MESSAGES_TABLE,
) -> None:
    """Bring the two tables to ``revision`` (the newest by default), creating them if needed.

    Tables created by the Agents SDK's sessions or by ``SessionStore.create_tables()`` are
    adopted in place. Safe to run from several processes at once: one migrates, the others
    wait for it and then find nothing to do.
    """
    await _run_command(
        engine_or_url, sessions_table, messages_table, lambda cfg: command.upgrade(cfg, revision)
    )


async def downgrade(
    engine_or_url: EngineOrUrl,
    revision: str,
    *,
    sessions_table: str = DEFAULT_SESSIONS_TABLE,
    messages_table: str = DEFAULT_MESSAGES_TABLE,
) -> None:
    """Take the tables back to ``revision``; ``"base"`` drops them, with all their rows."""
    await _run_command(
        engine_or_url, sessions_table, messages_table, lambda cfg: command.downgrade(cfg, revision)
    )


async def current(
    engine_or_url: EngineOrUrl = None,
    *,
    sessions_table: str = DEFAULT_SESSIONS_TABLE,
    messages_table: str = DEFAULT_MESSAGES_TABLE,
) -> str | None:
    """The revision the tables are at, or None when there is none to find.

    In a host application's database whose ``alembic_version`` holds a host revision that
    depends on ours (Alembic then drops our row), the answer is judged like :func:`check`
    does: this package's head when the tables match its models, else None.

    Given the URL of a SQLite file that does not exist, it returns None without creating it.
    """
    sessions, messages = _migration.table_names(sessions_table, messages_table)
    if _missing_file(engine_or_url) is not None:
        return None
    async with _connect(engine_or_url) as conn:
        found = await conn.run_sync(_current_revision, sessions)
        if (
            found is None
            and await conn.run_sync(_host_head_covers_ours, sessions, messages)
            and not await conn.run_sync(_schema_diffs, sessions, messages)
        ):
            found = head_revision()
        return found


async def host_heads(engine_or_url: EngineOrUrl = None) -> list[str]:
    """The revisions in a host application's ``alembic_version`` table ([] without one)."""
    if _missing_file(engine_or_url) is not None:
        return []
    async with _connect(engine_or_url) as conn:
        return await conn.run_sync(_host_heads)


async def check(
    engine_or_url: EngineOrUrl = None,
    *,
    sessions_table: str = DEFAULT_SESSIONS_TABLE,
    messages_table: str = DEFAULT_MESSAGES_TABLE,
) -> None:
    """Raise unless the tables are at this package's head revision and match its models.

    Raises:
        SchemaOutOfDateError: the database is behind or ahead of the package, or its tables
            differ from the models; the message says what was found and what to run.
            A SQLite file that does not exist is reported so, and not created.
    """
    sessions, messages = _migration.table_names(sessions_table, messages_table)
    missing = _missing_file(engine_or_url)
    if missing is not None and not isinstance(engine_or_url, AsyncEngine):
        url = _dialect.async_url(_url_of(engine_or_url))
        raise SchemaOutOfDateError(
            f"no database file {missing!r} (not created): "
            + _migration.out_of_date_message(
                url, None, head_revision(), sessions, messages, known=True
            )
        )
    async with _connect(engine_or_url) as conn:
        found = await conn.run_sync(_current_revision, sessions)
        needed = head_revision()
        if found is None and await conn.run_sync(_host_head_covers_ours, sessions, messages):
            # A host revision that depends on ours replaces our row in its alembic_version;
            # without the host's scripts only the schema comparison below can tell.
            found = needed
        if found != needed:
            raise SchemaOutOfDateError(
                _migration.out_of_date_message(
                    conn.engine.url, found, needed, sessions, messages, _knows(found)
                )
            )
        diffs = await conn.run_sync(_schema_diffs, sessions, messages)
    if diffs:
        listed = "; ".join(_migration.describe_diff(diff) for diff in diffs)
        raise SchemaOutOfDateError(
            f"the tables {sessions!r} and {messages!r} are at revision {found} but differ from "
            f"the models: {listed}. They were changed outside the migrations; undo those "
            "changes, or write a revision that makes them (see docs/migrations.md); in a "
            "host application's Alembic, run: alembic upgrade heads"
        )


@functools.cache
def head_revision() -> str:
    """The newest revision this package ships.

    Raises:
        MigrationError: a revision that is not ours sits among the package's revisions, as
            ``alembic revision`` leaves it when a host application's revision revises ours.
    """
    script = ScriptDirectory(_script_location())
    foreign = [rev for rev in script.walk_revisions() if not _is_ours(rev.revision)]
    if foreign:
        files = ", ".join(str(rev.path) for rev in foreign)
        raise MigrationError(
            f"found revisions that are not agent-session-store's inside the installed package: "
            f"{files}. A host application's `alembic revision` put them there because they "
            "revise our head; move them to your own versions folder, start your own branch "
            "(alembic revision --head=base --branch-label=... --version-path=..., see "
            "docs/migrations.md), then reinstall agent-session-store"
        )
    head = script.get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise RuntimeError("agent-session-store ships no migration revisions")
    return head


def alembic_options(
    *,
    sessions_table: str = DEFAULT_SESSIONS_TABLE,
    messages_table: str = DEFAULT_MESSAGES_TABLE,
) -> dict[str, Any]:
    """Options for a host application's ``context.configure(...)`` naming our tables.

    Only needed with table names other than the defaults::

        context.configure(connection=connection, target_metadata=Base.metadata,
                          **alembic_options(sessions_table="chat_sessions",
                                            messages_table="chat_messages"))
    """
    sessions, messages = _migration.table_names(sessions_table, messages_table)
    return {_migration.TABLES_OPTION: {"sessions_table": sessions, "messages_table": messages}}


def configured_tables(context: MigrationContext) -> tuple[str, str]:
    """``(sessions_table, messages_table)`` of a running migration; revisions call this."""
    return _migration.tables_from_opts(context.opts)


# -- internals ------------------------------------------------------------------------------


def _script_location() -> str:
    return str(resources.files("agent_session_store.migrations"))


def _url_of(engine_or_url: str | URL | None) -> str | URL:
    return engine_or_url or os.environ.get(URL_ENV) or _dialect.DEFAULT_URL


def _missing_file(engine_or_url: EngineOrUrl) -> str | None:
    # Only for URLs: an engine the caller made is theirs to point where they like.
    if isinstance(engine_or_url, AsyncEngine):
        return None
    return _dialect.missing_sqlite_file(_dialect.async_url(_url_of(engine_or_url)))


@asynccontextmanager
async def _connect(engine_or_url: EngineOrUrl) -> AsyncIterator[AsyncConnection]:
    if isinstance(engine_or_url, AsyncEngine):
        engine, owned = engine_or_url, False
    else:
        url = _dialect.async_url(_url_of(engine_or_url))
        engine, owned = create_async_engine(url, poolclass=NullPool), True
    _dialect.configure_sqlite(engine.sync_engine)
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        if owned:
            await engine.dispose()


async def _run_command(
    engine_or_url: EngineOrUrl,
    sessions_table: str,
    messages_table: str,
    run: Callable[[Config], None],
) -> None:
    sessions, messages = _migration.table_names(sessions_table, messages_table)

    def in_greenlet(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", _script_location().replace("%", "%%"))
        config.attributes.update(
            connection=connection, sessions_table=sessions, messages_table=messages
        )
        run(config)

    async with _connect(engine_or_url) as conn:
        await conn.run_sync(in_greenlet)


def _current_revision(connection: Connection, sessions_table: str) -> str | None:
    own_table = _migration.version_table(sessions_table)
    tables = set(inspect(connection).get_table_names())
    for table in (own_table, _HOST_VERSION_TABLE):
        if table not in tables:
            continue
        context = MigrationContext.configure(connection, opts={"version_table": table})
        ours = [head for head in context.get_current_heads() if _is_ours(head)]
        if ours:
            return ours[0]
    return None


def _host_heads(connection: Connection) -> list[str]:
    if _HOST_VERSION_TABLE not in inspect(connection).get_table_names():
        return []
    context = MigrationContext.configure(connection, opts={"version_table": _HOST_VERSION_TABLE})
    return list(context.get_current_heads())


def _host_head_covers_ours(connection: Connection, sessions: str, messages: str) -> bool:
    tables = set(inspect(connection).get_table_names())
    return {sessions, messages} <= tables and bool(_host_heads(connection))


def _knows(revision: str | None) -> bool:
    if revision is None:
        return True
    try:
        ScriptDirectory(_script_location()).get_revision(revision)
    except CommandError:
        return False
    return True


def _is_ours(revision: str) -> bool:
    return revision.startswith(_REVISION_PREFIX)


def _schema_diffs(connection: Connection, sessions: str, messages: str) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "include_name": _migration.include_only(
                *_migration.store_tables(sessions, messages)
            ),
        },
    )
    return list(compare_metadata(context, _migration.target_metadata(sessions, messages)))
