"""What differs between SQLite, PostgreSQL and MySQL/MariaDB, kept in one place.

URL defaults, per-connection SQLite settings, the session-row upsert, and which errors mean
"the transaction was rolled back by the server; running it again is safe".
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Table, Text, bindparam, event, func, insert, select, text, true
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import QueuePool
from sqlalchemy.sql.dml import Insert
from sqlalchemy.util import await_only

from agent_session_store.errors import (
    DriverNotInstalledError,
    ItemTooLargeError,
    UnsupportedDatabaseError,
)
from agent_session_store.models import utcnow

DEFAULT_URL = "sqlite+aiosqlite:///agent_sessions.db"

#: The async driver used when a URL names a backend without one.
_ASYNC_DRIVERS = {
    "sqlite": "aiosqlite",
    "postgresql": "asyncpg",
    "cockroachdb": "asyncpg",
    "mysql": "aiomysql",
    "mariadb": "aiomysql",
}
#: Backend names that mean one of ours: ``postgres://`` is the usual PaaS ``DATABASE_URL``.
_BACKEND_ALIASES = {"postgres": "postgresql"}
#: Async drivers SQLAlchemy has for our backends: the module to import, what to install.
_DRIVER_INSTALL = {
    "aiosqlite": ("aiosqlite", "pip install aiosqlite"),
    "asyncpg": ("asyncpg", 'pip install "agent-session-store[postgres]"'),
    "psycopg": ("psycopg", 'pip install "psycopg[binary]"'),
    "psycopg_async": ("psycopg", 'pip install "psycopg[binary]"'),
    "aiomysql": ("aiomysql", 'pip install "agent-session-store[mysql]"'),
    "asyncmy": ("asyncmy", "pip install asyncmy"),
}
#: Drivers without asyncio support, which an ``AsyncEngine`` cannot use.
_SYNC_DRIVERS = {
    "pysqlite", "pysqlcipher", "psycopg2", "psycopg2cffi", "pg8000", "pymysql", "mysqldb",
    "mysqlconnector", "mariadbconnector", "cymysql", "pyodbc",
}

#: Seconds the CLI waits for a server to answer a new connection (``--connect-timeout``).
DEFAULT_CONNECT_TIMEOUT_S = 10.0

SQLITE_BUSY_TIMEOUT_MS = 30_000


def async_url(url: str | URL) -> URL:
    """Parse ``url``, adding the default async driver when it names none.

    ``postgresql://`` (and ``postgres://``) becomes ``postgresql+asyncpg://``, ``mysql://``
    ``mysql+aiomysql://`` and ``sqlite://`` ``sqlite+aiosqlite://``; MySQL/MariaDB URLs get
    ``charset=utf8mb4`` unless they set a charset, so that emoji and other 4-byte characters
    survive.

    Raises:
        UnsupportedDatabaseError: the URL names a database other than SQLite, PostgreSQL and
            MySQL/MariaDB, or a driver without asyncio support.
        DriverNotInstalledError: the URL's driver is not importable, saying what to install.
    """
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    backend = _BACKEND_ALIASES.get(backend, backend)
    if backend not in _ASYNC_DRIVERS:
        raise UnsupportedDatabaseError(
            f"agent-session-store stores history in SQLite, PostgreSQL or MySQL/MariaDB, not "
            f"{backend!r}; use a sqlite://, postgresql:// or mysql:// URL"
        )
    if driver in _SYNC_DRIVERS:
        default = _ASYNC_DRIVERS[backend]
        raise UnsupportedDatabaseError(
            f"{driver!r} has no asyncio support, and agent-session-store runs on asyncio; "
            f"leave the driver out ({backend}://...) to use {default!r}, or name another "
            f"async driver ({backend}+{default}://...)"
        )
    driver = driver or _ASYNC_DRIVERS[backend]
    parsed = parsed.set(drivername=f"{backend}+{driver}")
    if backend in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    module, install = _DRIVER_INSTALL.get(driver, (driver, f"pip install {driver}"))
    if importlib.util.find_spec(module) is None:
        raise DriverNotInstalledError(
            f"the database URL needs the {driver!r} driver, which is not installed; "
            f"run: {install}"
        )
    return parsed


def missing_sqlite_file(url: URL) -> str | None:
    """The path of a SQLite file ``url`` names that does not exist yet, else None.

    Connecting would create it: commands that only look at a database check this first, so
    that a typo in the path says so instead of leaving an empty file behind.
    """
    if url.get_backend_name() != "sqlite" or url.query.get("uri"):
        return None
    path = url.database
    if path in (None, "", ":memory:") or Path(path).exists():
        return None
    return path


def connect_timeout_args(url: URL, seconds: float) -> dict[str, Any]:
    """``connect_args`` that bound how long the driver of ``url`` waits to connect.

    asyncpg's ``timeout`` covers the whole connection set-up; aiomysql's ``connect_timeout``
    only the TCP connect (a server that accepts and never answers is caught by the CLI's own
    deadline, see ``_cli_base.open_store``). SQLite needs none.
    """
    driver = url.get_driver_name()
    if driver == "asyncpg":
        return {"timeout": seconds}
    if driver in ("aiomysql", "asyncmy"):
        return {"connect_timeout": seconds}
    if driver in ("psycopg", "psycopg_async"):
        return {"connect_timeout": max(1, round(seconds))}
    return {}


def pools_connections(url: URL) -> bool:
    """True when SQLAlchemy would give ``url`` a pool of many connections (a QueuePool).

    SQLite ``:memory:`` gets one shared connection instead (StaticPool).
    """
    dialect: Any = url.get_dialect(_is_async=True)
    return issubclass(dialect.get_pool_class(url), QueuePool)


def configure_sqlite(engine: Engine) -> None:
    """Make every new SQLite connection of ``engine`` wait for locks and use WAL.

    The busy timeout is set first: switching a fresh file to WAL takes an exclusive lock,
    and without the timeout concurrent first connections fail with "database is locked".
    """
    if engine.dialect.name != "sqlite" or event.contains(engine, "connect", _on_sqlite_connect):
        return
    event.listen(engine, "connect", _on_sqlite_connect)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS:d}")
        cursor.execute("PRAGMA foreign_keys = ON")
        _switch_to_wal(cursor)
        # In WAL mode NORMAL never corrupts the file; a power cut may drop the last commits.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    # Two processes opening a fresh file can both see "delete" mode and race to switch; SQLite
    # answers the loser "database is locked" at once, without waiting out the busy timeout.
    # Look again after a pause: usually the winner has switched the file for both.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        cursor.execute("PRAGMA journal_mode")
        mode = cursor.fetchone()
        if mode is None or str(mode[0]).lower() in ("wal", "memory"):
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:  # the driver's own OperationalError: connect is not wrapped
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
        # Runs inside the async engine's greenlet: wait on the event loop, do not block it.
        await_only(asyncio.sleep(random.uniform(0.01, 0.05)))


def is_mysql(dialect: Dialect) -> bool:
    """True for MySQL and MariaDB, whatever driver."""
    return dialect.name in ("mysql", "mariadb")


def touch_session(dialect: Dialect, sessions: Table) -> Insert:
    """``INSERT`` the session row, or bump ``updated_at`` if it exists.

    On PostgreSQL and MySQL/MariaDB the conflict update also locks the row until commit, which
    is what keeps concurrent ``add_items`` batches on one session contiguous.
    """
    if is_mysql(dialect):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        my_stmt = mysql_insert(sessions)
        return my_stmt.on_duplicate_key_update(updated_at=utcnow())
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg_stmt = pg_insert(sessions)
        return pg_stmt.on_conflict_do_update(
            index_elements=[sessions.c.session_id], set_={"updated_at": utcnow()}
        )
    if dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite_stmt = sqlite_insert(sessions)
        return lite_stmt.on_conflict_do_update(
            index_elements=[sessions.c.session_id], set_={"updated_at": utcnow()}
        )
    raise NotImplementedError(f"dialect {dialect.name!r} is not supported")


def append_items(
    dialect: Dialect, sessions: Table, messages: Table, keys: Table | None = None
) -> Insert | None:
    """One statement that upserts the session row and appends the items, where there is one.

    On PostgreSQL the upsert runs as a data-modifying CTE that the appended rows join, so its
    row lock is taken before any message id is drawn: concurrent batches on one session stay
    contiguous, in one round trip instead of four (BEGIN, upsert, insert, COMMIT). Items come
    as one ``text[]`` parameter ``texts``, kept in order by ``WITH ORDINALITY``; the session
    id is ``sid``. None on other dialects, which have no data-modifying CTEs.

    With ``keys`` (the idempotency keys table), the batch's key ``key`` is inserted by one
    more CTE in the same statement: a key already there fails the whole statement with a
    unique violation, so no second copy of a batch is stored.
    """
    if dialect.name != "postgresql":
        return None
    from sqlalchemy.dialects.postgresql import ARRAY
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    touched = (
        pg_insert(sessions)
        .values(session_id=bindparam("sid"))
        .on_conflict_do_update(
            index_elements=[sessions.c.session_id], set_={"updated_at": utcnow()}
        )
        .returning(sessions.c.session_id)
        .cte("touched")
    )
    texts = (
        func.unnest(bindparam("texts", type_=ARRAY(Text)))
        .table_valued("message_data", with_ordinality="n")
        .render_derived()
    )
    source: Any = touched
    if keys is not None:
        source = keyed_cte(keys, touched)
    rows = (
        select(source.c.session_id, texts.c.message_data)
        .select_from(source)
        .join(texts, true())
        .order_by(texts.c.n)
    )
    stmt = insert(messages).from_select(["session_id", "message_data"], rows).add_cte(touched)
    return stmt if keys is None else stmt.add_cte(source)


def keyed_cte(keys: Table, touched: Any) -> Any:
    """A CTE inserting the key ``key`` for the session ``touched`` returns (PostgreSQL)."""
    keyed = insert(keys).from_select(
        ["session_id", "idempotency_key"],
        select(touched.c.session_id, bindparam("key", type_=keys.c.idempotency_key.type)),
    )
    return keyed.returning(keys.c.session_id).cte("keyed")


#: The server's ``max_allowed_packet``: the largest statement it accepts, in bytes.
MAX_PACKET = text("SELECT @@max_allowed_packet")
#: Bytes of an INSERT around one row's values: keywords, names, quotes, the session id's row.
_INSERT_OVERHEAD = 1024


def check_packet_size(texts: list[str], session_id: str, max_packet: int) -> None:
    r"""Refuse, before sending, a row whose INSERT MySQL/MariaDB would cut the connection on.

    A statement over ``max_allowed_packet`` makes the server drop the connection with a bare
    "Lost connection to server during query"; this says which item and which limit instead.
    The driver sends each row's text quoted, with ``\``, ``'`` and ``"`` escaped.
    """
    room = max_packet - _INSERT_OVERHEAD - 2 * len(session_id.encode())
    for index, item_text in enumerate(texts):
        if len(item_text) * 8 <= room:  # cannot be too large even if every char needs 8 bytes
            continue
        size = len(item_text.encode()) + sum(item_text.count(c) for c in "\\'\"")
        if size > room:
            raise ItemTooLargeError(
                f"items[{index}] is {size} bytes as escaped JSON and needs a statement of "
                f"about {size + max_packet - room} bytes, more than the MySQL/MariaDB server "
                f"accepts (max_allowed_packet = {max_packet} bytes); "
                "raise max_allowed_packet on the server or store smaller items. "
                "Nothing was stored."
            )


#: SQLSTATEs after which the server has rolled the whole transaction back.
_RETRY_SQLSTATES = {"40001", "40P01"}
#: MySQL/MariaDB error codes with the same meaning: deadlock, lock wait timeout.
_RETRY_MYSQL_CODES = {1213, 1205}


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` means the transaction was rolled back and can safely run again.

    Deadlocks, serialization failures and SQLite's "database is locked" qualify; a lost
    connection does not, because a commit may have happened before it was lost.
    """
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _RETRY_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _RETRY_MYSQL_CODES:
        return True
    message = str(orig).lower()
    return "database is locked" in message or "deadlock" in message
