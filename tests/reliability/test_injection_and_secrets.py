"""Hostile text is data, never SQL; passwords in URLs appear in no repr, log or error."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

import agent_session_store
from agent_session_store import DatabaseConnectionError, SessionStore, SQLAlchemySession

from ..conftest import server_url
from .figures import Figures, database_of
from .servers import PASSWORD, PrivateMariaDB, PrivatePostgres

HOSTILE = [
    "'; DROP TABLE agent_messages; --",
    '" OR "1"="1',
    "' OR '1'='1' /*",
    "x'); DELETE FROM agent_sessions; --",
    "`agent_sessions`",
    "\\'; SELECT pg_sleep(10); --",
    "%s %(name)s ? :sid $1 {0}",
    "%%; %_ LIKE '%'",
    "\x1a\\\\\\",
    "Robert'); DROP TABLE students;--",
    "NULL",
    "🙂 ünïcödé ‮reversed",
    "line\nbreak\r\ttab",
    "--",
    "/*",
]


async def test_session_ids_and_item_text_full_of_sql_metacharacters_round_trip_as_data(
    store: SessionStore, figures: Figures, request: pytest.FixtureRequest
) -> None:
    await store.session("bystander").add_items([{"content": "untouched"}])
    for n, hostile in enumerate(HOSTILE):
        session = store.session(hostile)
        items = [{"role": "user", "content": hostile}, {hostile: [hostile, n]}]
        await session.add_items(items)
        assert await session.get_items() == items
        assert await session.get_items(limit=1) == items[-1:]
        assert await session.pop_item() == items[-1]
    for hostile in HOSTILE:
        session = store.session(hostile)
        assert await session.get_items() == [{"role": "user", "content": hostile}]
        await session.clear_session()
        assert await session.get_items() == []
    assert await store.session("bystander").get_items() == [{"content": "untouched"}]
    figures.add(
        "SQL meta-characters as session ids and item text",
        database_of(request),
        runs=len(HOSTILE) * 6,
        items=len(HOSTILE) * 2,
    )


async def test_ids_differing_by_case_wildcards_or_whitespace_stay_separate(
    store: SessionStore,
) -> None:
    ids = ["x", "X", "x%", "x_", "%", "_", "x\t", " x", "x.", "ẋ"]
    for sid in ids:
        await store.session(sid).add_items([{"id": sid}])
    for sid in ids:
        assert await store.session(sid).get_items() == [{"id": sid}]
    await store.session("%").clear_session()
    assert await store.session("x%").get_items() == [{"id": "x%"}]


async def test_every_value_reaches_the_database_as_a_bound_parameter(store: SessionStore) -> None:
    marker = "M4RK3R'\""
    statements: list[str] = []
    parameters: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        statements.append(statement)
        parameters.append(repr(params))

    event.listen(store.engine.sync_engine, "before_cursor_execute", capture)
    try:
        session = store.session(f"session {marker}")
        await session.add_items([{"content": marker}])
        await session.add_items([{"content": marker}, {"content": marker}])
        await session.get_items()
        await session.get_items(limit=1)
        await session.pop_item()
        await session.clear_session()
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", capture)

    assert len(statements) >= 6
    assert not [s for s in statements if "M4RK3R" in s]
    assert len([p for p in parameters if "M4RK3R" in p]) >= 6


REPOSITORY = Path(__file__).resolve().parents[2]
SQL_CALLS = {"text", "execute", "exec_driver_sql", "literal_column", "executescript"}


def _integer_only(fstring: ast.JoinedStr) -> bool:
    """An f-string whose every field is formatted ``:d``: it can only ever hold digits."""
    return all(
        isinstance(part, ast.Constant)
        or (
            isinstance(part, ast.FormattedValue)
            and isinstance(part.format_spec, ast.JoinedStr)
            and [getattr(v, "value", None) for v in part.format_spec.values] == ["d"]
        )
        for part in fstring.values
    )


def _is_built(arg: ast.expr) -> bool:
    if isinstance(arg, ast.JoinedStr):
        return not _integer_only(arg)
    if isinstance(arg, ast.BinOp) and isinstance(arg.op, (ast.Mod, ast.Add)):
        return True
    return isinstance(arg, ast.Call) and getattr(arg.func, "attr", "") == "format"


def sql_built_from_values(source: str) -> list[tuple[int, str]]:
    """Lines where SQL text handed to SQLAlchemy or a driver is built by formatting."""
    lines = source.splitlines()
    return [
        (node.lineno, lines[node.lineno - 1].strip())
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and node.args
        and getattr(node.func, "attr", getattr(node.func, "id", "")) in SQL_CALLS
        and _is_built(node.args[0])
    ]


def test_no_sql_in_the_package_is_assembled_from_values() -> None:
    bad = (
        'conn.execute(text(f"SELECT * FROM t WHERE id = {sid}"))\n'
        'cur.execute("x=%s" % v)\n'
        'cur.execute(f"PRAGMA x = {n:d} -- {name}")\n'
        'cur.execute(f"PRAGMA busy_timeout = {ms:d}")\n'  # digits only: allowed
    )
    assert len(sql_built_from_values(bad)) == 3  # the check can fail
    package = Path(agent_session_store.__file__).parent
    # The migrations ship inside the wheel; in a checkout they sit at the top level.
    sources = sorted(package.rglob("*.py")) + sorted(REPOSITORY.glob("migrations/**/*.py"))
    assert len(sources) >= 8
    offenders = [
        f"{path.name}:{line}: {code}"
        for path in sources
        for line, code in sql_built_from_values(path.read_text())
    ]
    assert offenders == []


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy", "sqlalchemy.engine", "sqlalchemy.pool", "asyncpg", "aiomysql"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


async def test_a_password_in_the_url_appears_in_no_repr_log_or_error(
    private_server: PrivatePostgres | PrivateMariaDB,
    all_logs: pytest.LogCaptureFixture,
    figures: Figures,
    request: pytest.FixtureRequest,
) -> None:
    server = private_server
    seen: list[str] = []
    async with SessionStore(server.url, engine_kwargs={"echo": "debug"}) as store:
        await store.create_tables()
        session = store.session("secret")
        await session.add_items([{"content": "hi"}])
        seen += [repr(store), str(store), repr(session), repr(store.engine), str(store.engine.url)]
        sdk_style = SQLAlchemySession("sdk", engine=store.engine)
        seen.append(repr(sdk_style))

        # A statement that fails on the server: its error carries SQL and parameters.
        async with store.engine.begin() as conn:
            await conn.execute(text("DROP TABLE agent_messages"))
        with pytest.raises(Exception) as failed:
            await session.add_items([{"content": "table is gone"}])
        seen += [str(failed.value), repr(failed.value)]

        server.stop()
        with pytest.raises(DatabaseConnectionError) as down:
            await session.get_items()
        seen += [str(down.value), repr(down.value), str(down.value.__cause__)]
        server.start()

    seen += [record.getMessage() for record in all_logs.records]
    seen.append(all_logs.text)
    leaks = [s for s in seen if PASSWORD in s]
    assert len(all_logs.records) > 10  # the logs were really captured
    assert "***" in repr(store)
    figures.add(
        "password in URL: reprs, logs and errors searched",
        database_of(request),
        runs=len(seen),
        items=1,
        faults=2,
        lost=len(leaks),
    )
    assert leaks == []


def _with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


@pytest.mark.mariadb
async def test_a_refused_login_names_the_database_without_the_password() -> None:
    url = _with_password(server_url("mariadb"), PASSWORD)  # root has no password: refused
    async with SessionStore(url) as store:
        with pytest.raises(DatabaseConnectionError) as refused:
            await store.session("s").get_items()
    message = str(refused.value)
    assert "Access denied" in message
    assert "***" in message
    assert PASSWORD not in message
    assert PASSWORD not in repr(refused.value.__cause__)


@pytest.mark.postgresql
async def test_a_wrong_password_on_postgresql_is_refused_without_echoing_it(
    all_logs: pytest.LogCaptureFixture,
) -> None:
    server = PrivatePostgres()
    try:
        server.start()
        wrong = "Wr0ng-" + PASSWORD
        async with SessionStore(_with_password(server.url, wrong)) as store:
            with pytest.raises(DatabaseConnectionError) as refused:
                await store.create_tables()
        message = str(refused.value)
        assert "password authentication failed" in message
        assert wrong not in message and PASSWORD not in message
        assert wrong not in all_logs.text
    finally:
        server.remove()
