"""Dialects are recognised by class: a dialect built on one of ours gets our SQL for it.

CockroachDB and YugabyteDB ship dialects that subclass SQLAlchemy's PostgreSQL dialect under
their own names. No such server runs here, so each family gets a stand-in registered by the
test: a subclass of SQLAlchemy's own dialect for that database, with another ``name``, run
against the real server. Every name-based test (``dialect.name == "postgresql"``) would send
it to "not supported"; by class it reaches the same SQL as the real dialect.
"""

from __future__ import annotations

from typing import Any

import pytest
from alembic.ddl.mysql import MySQLImpl
from alembic.ddl.postgresql import PostgresqlImpl
from alembic.ddl.sqlite import SQLiteImpl
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.mysql.aiomysql import MySQLDialect_aiomysql
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import default, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from agent_session_store import SessionStore
from agent_session_store._family import Family, family_of
from agent_session_store.errors import UnsupportedDatabaseError
from tests.conftest import dialect_of


class StandInPostgreSQL(PGDialect_asyncpg):
    """Stands for CockroachDB's dialect: PostgreSQL's, under another name."""

    name = "standinpg"
    supports_statement_cache = True


class StandInMySQL(MySQLDialect_aiomysql):
    name = "standinmy"
    supports_statement_cache = True


class StandInSQLite(SQLiteDialect_aiosqlite):
    name = "standinlite"
    supports_statement_cache = True


_STAND_IN_DRIVERS = {"standinpg": "asyncpg", "standinmy": "aiomysql", "standinlite": "aiosqlite"}


class _NoDBAPI:
    paramstyle = "qmark"

    class Error(Exception):
        pass


class NotOurs(default.DefaultDialect):
    """A dialect of none of our families, async, that needs no driver to be made."""

    name = "notours"
    driver = "fake"
    is_async = True
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        return _NoDBAPI


for _name, _cls in (
    ("standinpg", "StandInPostgreSQL"),
    ("standinmy", "StandInMySQL"),
    ("standinlite", "StandInSQLite"),
):
    # With and without the driver: SQLAlchemy looks dialect options up by the bare name.
    registry.register(_name, __name__, _cls)
    registry.register(f"{_name}.{_STAND_IN_DRIVERS[_name]}", __name__, _cls)
registry.register("notours.fake", __name__, "NotOurs")


# Alembic picks its DDL implementation by dialect name, so a dialect package registers one
# (sqlalchemy-cockroachdb does); subclassing registers these.
class StandInPostgresqlImpl(PostgresqlImpl):
    __dialect__ = "standinpg"


class StandInMySQLImpl(MySQLImpl):
    __dialect__ = "standinmy"


class StandInSQLiteImpl(SQLiteImpl):
    __dialect__ = "standinlite"

_STAND_INS = {
    "postgresql": "standinpg+asyncpg",
    "mariadb": "standinmy+aiomysql",
    "sqlite": "standinlite+aiosqlite",
}


def _stand_in_url(url: str) -> str:
    return make_url(url).set(drivername=_STAND_INS[dialect_of(url)]).render_as_string(
        hide_password=False
    )


async def test_a_dialect_built_on_ours_runs_every_operation_with_our_sql(db_url: str) -> None:
    url = _stand_in_url(db_url)
    async with SessionStore(url, ttl=3600) as store:
        assert store.engine.dialect.name.startswith("standin")
        await store.create_tables()
        session = store.session("s1", user_id="u1")
        await session.add_items([{"n": 1}, {"n": 2}, {"n": 3}])
        assert await session.pop_item() == {"n": 3}
        assert await session.get_items(limit=1) == [{"n": 2}]
        await store.add_items("plain", [{"n": 1}])
        await store.records.update("s1", "u1", metadata={"team": "a"}, title="first")
        page = await store.list_sessions(metadata={"team": "a"})
        assert [r.session_id for r in page.sessions] == ["s1"]
        assert (await store.info("s1", "u1")) is not None
        await session.clear_session()
        assert await session.get_items() == []
        assert await store.count_items("plain") == 1


async def test_migrations_run_on_a_dialect_built_on_ours(shared_db_url: str) -> None:
    from agent_session_store import check, upgrade

    url = _stand_in_url(shared_db_url)
    await upgrade(url)
    await check(url)


@pytest.mark.parametrize(
    "url", ["mssql+aioodbc://u:p@127.0.0.1/db", "oracle+oracledb://u:p@127.0.0.1/db"]
)
def test_a_url_of_an_unsupported_database_is_refused_at_construction(url: str) -> None:
    with pytest.raises(UnsupportedDatabaseError, match="SQLite, PostgreSQL or MySQL"):
        SessionStore(url)


async def test_an_engine_of_an_unsupported_dialect_is_refused_at_construction() -> None:
    engine = create_async_engine("notours+fake://somewhere/db")
    try:
        with pytest.raises(UnsupportedDatabaseError, match="'notours' dialect"):
            SessionStore(engine)
    finally:
        await engine.dispose()


def test_families_follow_the_dialect_classes() -> None:
    assert family_of(StandInPostgreSQL) is Family.POSTGRESQL
    assert family_of(StandInMySQL()) is Family.MYSQL
    assert family_of(StandInSQLite) is Family.SQLITE
    from sqlalchemy.dialects.mysql.mariadb import MariaDBDialect

    assert family_of(MariaDBDialect) is Family.MYSQL
