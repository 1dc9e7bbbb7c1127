"""What every CLI command shares: where it works, how it opens the store, how it fails.

Errors a person can act on become :class:`CommandError`: one line on stderr, exit status 1,
or :data:`EXIT_UNREACHABLE` when the database could not be reached at all (bad URL, missing
driver or file, refused or silent server), so ``check`` tells "behind" from "cannot look".
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click
from sqlalchemy import Select, column, inspect, select, table
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from agent_session_store import _dialect, _migration
from agent_session_store.errors import (
    AgentSessionStoreError,
    DatabaseConnectionError,
    DriverNotInstalledError,
    SessionOwnershipError,
    UnsupportedDatabaseError,
)
from agent_session_store.models import DEFAULT_MESSAGES_TABLE, DEFAULT_SESSIONS_TABLE
from agent_session_store.store import SessionStore

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

URL_ENV = "AGENT_SESSION_STORE_URL"
#: Exit status when the database cannot be reached (1: any other error; 2: bad usage).
EXIT_UNREACHABLE = 3
_PASSWORD = re.compile(r"(//[^/@:]*:)[^@/]*@")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Target:
    """Where a command works: the URL and the two table names."""

    url: str
    sessions_table: str
    messages_table: str
    debug: bool
    connect_timeout: float = _dialect.DEFAULT_CONNECT_TIMEOUT_S

    @property
    def table_options(self) -> str:
        """``--sessions-table``/``--messages-table`` as typed, when not the defaults."""
        if (self.sessions_table, self.messages_table) == (
            DEFAULT_SESSIONS_TABLE, DEFAULT_MESSAGES_TABLE
        ):
            return ""
        return f" --sessions-table {self.sessions_table} --messages-table {self.messages_table}"

    @property
    def shown_url(self) -> str:
        """The URL with any password hidden, for messages."""
        try:
            return _dialect.async_url(self.url).render_as_string(hide_password=True)
        except Exception:
            # Not a URL SQLAlchemy can read: still never echo what looks like a password.
            return _PASSWORD.sub(r"\1***@", self.url)


class CommandError(click.ClickException):
    """An error a person can act on: printed as one line, exit status 1."""


class UnreachableError(CommandError):
    """The database could not be reached: exit status :data:`EXIT_UNREACHABLE`."""

    exit_code = EXIT_UNREACHABLE


def explain(exc: BaseException, target: Target) -> CommandError:
    """The one-line error for ``exc``, with the exit status it calls for."""
    shown = target.shown_url
    if isinstance(exc, (ArgumentError, NoSuchModuleError)):
        return UnreachableError(f"bad database URL {shown!r}: {exc}")
    if isinstance(exc, UnsupportedDatabaseError):
        return UnreachableError(f"bad database URL {shown!r}: {exc}")
    if isinstance(exc, DriverNotInstalledError):
        return UnreachableError(str(exc))
    if isinstance(exc, DatabaseConnectionError):
        return UnreachableError(str(exc))  # it names the database and what to check
    if isinstance(exc, DBAPIError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if exc.connection_invalidated or isinstance(exc.orig, OSError):
            return UnreachableError(f"cannot reach the database at {shown}: {reason}")
        return CommandError(f"database error at {shown}: {reason}")
    if isinstance(exc, SessionOwnershipError):  # an OSError subclass, not the network
        return CommandError(str(exc))
    if isinstance(exc, OSError) and exc.filename is not None:
        # A file of ours (export -o, import FILE), not the database's network.
        return CommandError(f"{exc.filename}: {exc.strerror or exc}")
    if isinstance(exc, (OSError, asyncio.TimeoutError)):
        detail = str(exc) or type(exc).__name__
        return UnreachableError(f"cannot reach the database at {shown}: {detail}")
    if isinstance(exc, (AgentSessionStoreError, ValueError)):
        return CommandError(str(exc))
    return CommandError(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")


def run(target: Target, work: Awaitable[T]) -> T:
    """Run a command's coroutine; turn expected failures into one-line errors."""
    try:
        return asyncio.run(work)  # type: ignore[arg-type]
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except Exception as exc:
        if target.debug:
            raise
        raise explain(exc, target) from None


def database_options(command: F) -> F:
    """The options every database command takes, gathered into a ``Target`` argument."""

    @click.option("--url", envvar=URL_ENV, default=_dialect.DEFAULT_URL, show_default=True,
                  help=f"Database URL (default from ${URL_ENV}).")
    @click.option("--sessions-table", default=DEFAULT_SESSIONS_TABLE, show_default=True)
    @click.option("--messages-table", default=DEFAULT_MESSAGES_TABLE, show_default=True)
    @click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True),
                  default=_dialect.DEFAULT_CONNECT_TIMEOUT_S, show_default=True,
                  help="Seconds to wait for the database server to answer.")
    @click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
    @functools.wraps(command)
    def wrapper(
        url: str, sessions_table: str, messages_table: str, connect_timeout: float, debug: bool,
        **kwargs: Any,
    ) -> Any:
        target = Target(url, sessions_table, messages_table, debug, connect_timeout)
        return command(target, **kwargs)

    return wrapper  # type: ignore[return-value]


@asynccontextmanager
async def open_store(target: Target, url: str | URL | None = None) -> AsyncIterator[SessionStore]:
    """The store for ``target`` (or for ``url`` with its table names), closed afterwards.

    A server must answer within ``target.connect_timeout`` seconds. The drivers' own timeouts
    do not all cover a server that accepts the connection and then says nothing, so the first
    connection is also opened under a deadline of our own (it goes back to the pool for the
    command to use).
    """
    parsed = _dialect.async_url(url or target.url)
    timeout = target.connect_timeout
    store = SessionStore(
        parsed,
        sessions_table=target.sessions_table,
        messages_table=target.messages_table,
        engine_kwargs={"connect_args": _dialect.connect_timeout_args(parsed, timeout)},
    )
    try:
        if parsed.get_backend_name() != "sqlite":  # a file needs no deadline, and may not exist
            try:
                await asyncio.wait_for(_first_connection(store), timeout)
            except asyncio.TimeoutError:
                raise UnreachableError(
                    f"no answer from the database at {target.shown_url} within {timeout:g}s; "
                    "check the host and port, or wait longer with --connect-timeout"
                ) from None
        yield store
    finally:
        await store.close()


async def _first_connection(store: SessionStore) -> None:
    async with store.engine.connect():
        pass


def has_table(conn: Connection, name: str) -> bool:
    """True when the database behind ``conn`` has a table called ``name``."""
    return inspect(conn).has_table(name)


def _schema_state(conn: Connection, sessions_table: str) -> tuple[bool, str | None]:
    """Whether the sessions table exists, and the revision our own version table records."""
    if not has_table(conn, sessions_table):
        return False, None
    versions = _migration.version_table(sessions_table)
    if not has_table(conn, versions):
        return True, None
    query: Select[Any] = select(column("version_num")).select_from(table(versions))
    recorded: list[Any] = list(conn.execute(query).scalars())
    return True, recorded[0] if len(recorded) == 1 else None


async def require_schema(store: SessionStore, target: Target) -> None:
    """Fail with what to run when the tables are missing or the schema is behind.

    A version row at this package's head is taken at its word, without importing Alembic;
    any other state is judged by :func:`migrate.check` (``check`` always compares).
    """
    refuse_missing_file(store, target)
    async with store.engine.connect() as conn:
        present, recorded = await conn.run_sync(_schema_state, store.sessions_table)
    if not present:
        raise CommandError(
            f"no {store.sessions_table!r} table at {target.shown_url}; "
            f"run: agent-session-store upgrade --url '{target.shown_url}'{target.table_options}"
        )
    if recorded == _migration.HEAD_REVISION:
        return
    from agent_session_store import migrate  # here, not at the top: Alembic is slow to import

    # Tables made by create_tables() or the SDK carry no revision: usable, nothing to compare.
    tables = table_names(store)
    if await migrate.current(store.engine, **tables) is not None:
        await migrate.check(store.engine, **tables)


def refuse_missing_file(store: SessionStore, target: Target) -> None:
    """Fail before connecting when the SQLite file does not exist: connecting would create it."""
    missing = _dialect.missing_sqlite_file(store.engine.url)
    if missing is not None:
        raise UnreachableError(
            f"no database file {missing!r}; check the path, or create it with: "
            f"agent-session-store upgrade --url '{target.shown_url}'{target.table_options}"
        )


async def prepare_schema(store: SessionStore) -> None:
    """Bring the tables to head, creating them or adopting tables the SDK made."""
    from agent_session_store import migrate

    await migrate.upgrade(store.engine, **table_names(store))


def table_names(store: SessionStore) -> dict[str, str]:
    """The table-name keyword arguments of the migrate API, for ``store``."""
    return {"sessions_table": store.sessions_table, "messages_table": store.messages_table}


def progress(console: Console, in_bytes: bool = False) -> Progress:
    """A progress bar on stderr; silent when stderr is not a terminal.

    It counts items, or with ``in_bytes`` bytes, shown with units (``1.2/4.0 MB``).
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    done = DownloadColumn() if in_bytes else MofNCompleteColumn()
    return Progress(
        TextColumn("{task.description}"), BarColumn(), done, TimeRemainingColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )
