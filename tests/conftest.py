"""One parametrized database fixture for every test: SQLite (file and memory), PostgreSQL, MariaDB.

Server URLs come from environment variables. Locally a missing URL skips that dialect with a
reason; with ``AGENT_SESSION_STORE_REQUIRE_SERVERS=1`` (set by ``.ci/run``) it is an error, and
the run fails unless every dialect ran at least one test.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store import SessionStore

POSTGRES_ENV = "AGENT_SESSION_STORE_TEST_POSTGRES_URL"
MARIADB_ENV = "AGENT_SESSION_STORE_TEST_MARIADB_URL"
REQUIRE_ENV = "AGENT_SESSION_STORE_REQUIRE_SERVERS"
SERVER_ENVS = {"postgresql": POSTGRES_ENV, "mariadb": MARIADB_ENV}
DIALECTS = ("sqlite", "postgresql", "mariadb")

_ran: Counter[str] = Counter()


def server_url(dialect: str) -> str:
    """The test URL for a server dialect, or skip (locally) / fail (in CI) without one."""
    env = SERVER_ENVS[dialect]
    url = os.environ.get(env)
    if not url:
        message = f"{env} is not set; {dialect} tests need a server (see README, Tests)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(reason=message)
    return url


def create_database_hint(url: str) -> str:
    """The one line that says which test database is missing and how to create it."""
    parsed = make_url(url)
    name, host, port = parsed.database, parsed.host or "127.0.0.1", parsed.port
    if parsed.get_backend_name() == "postgresql":
        create = f"createdb -h {host} -p {port or 5432} -U {parsed.username or 'postgres'} {name}"
    else:
        create = (f"mysql -h{host} -P{port or 3306} -u{parsed.username or 'root'} -e "
                  f"'CREATE DATABASE {name} CHARACTER SET utf8mb4'")
    return f"the test database {name!r} does not exist on {host}; create it: {create}"


def _is_missing_database(exc: BaseException) -> bool:
    text = str(exc).lower()
    return ("does not exist" in text and "database" in text) or "unknown database" in text


async def reset_database(url: str) -> None:
    """Drop every table in the test database, so each test starts from nothing.

    A database that does not exist fails the test with one line saying how to create it.
    """
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        try:
            conn = await engine.connect()
        except Exception as exc:
            if not _is_missing_database(exc):
                raise
            pytest.fail(create_database_hint(url), pytrace=False)
        await conn.close()
        async with engine.begin() as conn:
            metadata = MetaData()
            await conn.run_sync(metadata.reflect)
            await conn.run_sync(metadata.drop_all)
    finally:
        await engine.dispose()


def _url_for(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite_file":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    if kind == "sqlite_memory":
        return "sqlite+aiosqlite:///:memory:"
    return server_url(kind)


ALL_KINDS = [
    pytest.param("sqlite_file", marks=pytest.mark.sqlite, id="sqlite_file"),
    pytest.param("sqlite_memory", marks=pytest.mark.sqlite, id="sqlite_memory"),
    pytest.param("postgresql", marks=pytest.mark.postgresql, id="postgresql"),
    pytest.param("mariadb", marks=pytest.mark.mariadb, id="mariadb"),
]
#: Databases that several connections or processes can share (no ``:memory:``).
SHARED_KINDS = [p for p in ALL_KINDS if p.values[0] != "sqlite_memory"]


@pytest.fixture(params=ALL_KINDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database, for each dialect."""
    url = _url_for(request.param, tmp_path)
    if request.param in SERVER_ENVS:
        await reset_database(url)
    return url


@pytest.fixture(params=SHARED_KINDS)
async def shared_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database that other processes can open too."""
    url = _url_for(request.param, tmp_path)
    if request.param in SERVER_ENVS:
        await reset_database(url)
    return url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine the test owns, on an empty database."""
    engine = create_async_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SessionStore]:
    """A store that owns its engine, with its tables created."""
    async with SessionStore(db_url) as store:
        await store.create_tables()
        yield store


def dialect_of(url: str) -> str:
    """``sqlite``, ``postgresql`` or ``mariadb`` for a test URL."""
    if url.startswith("sqlite"):
        return "sqlite"
    if url.startswith("postgresql"):
        return "postgresql"
    return "mariadb"


_selected: Counter[str] = Counter()


def pytest_collection_finish(session: pytest.Session) -> None:
    # After -m/-k deselection: a run that selects one dialect (a child run per dialect) is
    # judged on that dialect only.
    for item in session.items:
        for dialect in DIALECTS:
            if item.get_closest_marker(dialect) is not None:
                _selected[dialect] += 1


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" or not report.passed:
        return
    for dialect in DIALECTS:
        if dialect in report.keywords:
            _ran[dialect] += 1


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    counts = ", ".join(f"{d}={_ran[d]}" for d in DIALECTS)
    terminalreporter.write_line(f"dialects exercised (passed tests): {counts}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get(REQUIRE_ENV) != "1" or session.config.option.collectonly:
        return
    missing = [d for d in DIALECTS if _ran[d] == 0 and _selected[d] > 0]
    if missing and exitstatus == 0:
        print(f"\nERROR: no test passed on {', '.join(missing)}; a run that skips a dialect fails")
        session.exitstatus = 1
