"""What the host-engine tests share: tenant schemas, Core reads to compare with, a workload.

Every check here reads through SQLAlchemy Core on the host's own terms (the same execution
options, a separate connection), so "the store behaves as SQLAlchemy would" means: equal to
what a Core query on that engine returns.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, event, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store.models import make_models

from .conftest import dialect_of, reset_database, server_url

#: Where a tenant's tables would land if the store ignored ``schema_translate_map``.
DEFAULT_SCHEMA = None


def tenant_names(url: str) -> tuple[str, str]:
    """Two tenant schema names, prefixed with the test database's name (helpers don't collide)."""
    if dialect_of(url) == "sqlite":
        return "tenant_a", "tenant_b"
    database = make_url(url).database
    return f"{database}_tenant_a", f"{database}_tenant_b"


async def recreate_schemas(url: str, names: tuple[str, ...]) -> None:
    """Drop and create each schema (PostgreSQL) or database (MariaDB), empty."""
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for name in names:
                quoted = engine.dialect.identifier_preparer.quote_identifier(name)
                if dialect_of(url) == "postgresql":
                    await conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted} CASCADE"))
                    await conn.execute(text(f"CREATE SCHEMA {quoted}"))
                else:
                    await conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
                    await conn.execute(text(f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4"))
    finally:
        await engine.dispose()


def attach_on_connect(engine: AsyncEngine, files: dict[str, Path]) -> None:
    """SQLite: every new connection ATTACHes each file under its schema name."""

    @event.listens_for(engine.sync_engine, "connect")
    def attach(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for name, path in files.items():
            cursor.execute("ATTACH DATABASE ? AS " + name, (str(path),))
        cursor.close()


def tables() -> tuple[Table, Table]:
    """The store's default sessions and messages tables."""
    models = make_models(None)
    return models.AgentSession.__table__, models.AgentMessage.__table__  # type: ignore[attr-defined]


def head_tables() -> list[Table]:
    """Every table of the schema at head (what ``alembic upgrade head`` makes), default names."""
    models = make_models(None)
    return [
        models.AgentSession.__table__,  # type: ignore[attr-defined]
        models.AgentMessage.__table__,  # type: ignore[attr-defined]
        models.AgentKey.__table__,  # type: ignore[attr-defined]
        models.AgentArchivedItem.__table__,  # type: ignore[attr-defined]
        models.AgentUsage.__table__,  # type: ignore[attr-defined]
    ]


TENANT_KINDS = [
    pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite_attached"),
    pytest.param("postgresql", marks=pytest.mark.postgresql, id="postgresql_schemas"),
    pytest.param("mariadb", marks=pytest.mark.mariadb, id="mariadb_databases"),
]


@pytest.fixture(name="host_engine", params=TENANT_KINDS)
async def host_engine_fixture(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """The host's engine (untranslated) with two empty tenant schemas beside the default one.

    SQLite has no schemas: each tenant is a database file ATTACHed on every connection, which
    is how SQLAlchemy documents schemas for SQLite.
    """
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'host.db'}"
        engine = create_async_engine(url)
        attach_on_connect(engine, {n: tmp_path / f"{n}.db" for n in tenant_names(url)})
    else:
        url = server_url(request.param)
        await reset_database(url)
        await recreate_schemas(url, tenant_names(url))
        engine = create_async_engine(url)
    yield engine
    await engine.dispose()
    if request.param != "sqlite":
        await recreate_schemas(url, tenant_names(url))


def for_tenant(engine: AsyncEngine, schema: str | None) -> AsyncEngine:
    """The engine a host gives a tenant's store: the same pool, the schema translated."""
    return engine.execution_options(schema_translate_map={None: schema})


async def create_tables_in(engine: AsyncEngine, schema: str | None) -> None:
    """Create the store's tables in ``schema`` with plain Core (as a host's migration would).

    All five of the schema at head: a host's migration makes the archive and usage tables
    too, and the store's removals (``delete_sessions``, ``erase_user``) touch them.
    """
    found = head_tables()
    async with for_tenant(engine, schema).begin() as conn:
        await conn.run_sync(found[0].metadata.create_all, tables=found)


async def table_names(engine: AsyncEngine, schema: str | None) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names(schema=schema)))


async def core_items(engine: AsyncEngine, schema: str | None, session_id: str) -> list[Any]:
    """The session's items in ``schema`` as a Core query on the host's engine reads them."""
    _, m = tables()
    stmt = select(m.c.message_data).where(m.c.session_id == session_id).order_by(m.c.id)
    async with for_tenant(engine, schema).connect() as conn:
        return [json.loads(row[0]) for row in await conn.execute(stmt)]


async def core_session_ids(engine: AsyncEngine, schema: str | None) -> set[str]:
    """Session ids with a session row or a message in ``schema``, read with Core."""
    s, m = tables()
    async with for_tenant(engine, schema).connect() as conn:
        ids = set((await conn.execute(select(s.c.session_id))).scalars())
        return ids | set((await conn.execute(select(m.c.session_id))).scalars())


async def core_count(engine: AsyncEngine, schema: str | None) -> int:
    _, m = tables()
    async with for_tenant(engine, schema).connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(m))).scalar_one())


async def core_error(engine: AsyncEngine, schema: str | None) -> BaseException:
    """The error Core raises reading the messages table in ``schema``."""
    _, m = tables()
    try:
        async with for_tenant(engine, schema).connect() as conn:
            await conn.execute(select(m.c.message_data))
    except Exception as exc:
        return exc
    raise AssertionError(f"Core read the messages table in {schema!r} without an error")


def same_error(ours: BaseException, core: BaseException) -> bool:
    """Same SQLAlchemy class and same driver error class (``.orig``) as Core raised."""
    return type(ours) is type(core) and type(getattr(ours, "orig", None)) is type(
        getattr(core, "orig", None)
    )
