"""What every CLI command shares: where it works, how it opens the store, how it fails.

Errors a person can act on become :class:`CommandError`: one line on stderr, exit status 1.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import inspect
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from agent_session_store import _dialect
from agent_session_store.errors import AgentSessionStoreError
from agent_session_store.models import DEFAULT_MESSAGES_TABLE, DEFAULT_SESSIONS_TABLE
from agent_session_store.store import SessionStore

URL_ENV = "AGENT_SESSION_STORE_URL"
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


def explain(exc: BaseException, target: Target) -> str:
    if isinstance(exc, (ArgumentError, NoSuchModuleError)):
        return f"bad database URL {target.shown_url!r}: {exc}"
    if isinstance(exc, DBAPIError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return f"database error at {target.shown_url}: {reason}"
    if isinstance(exc, (OSError, asyncio.TimeoutError)):
        return f"cannot reach the database at {target.shown_url}: {exc}"
    if isinstance(exc, (AgentSessionStoreError, ValueError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"


def run(target: Target, work: Awaitable[T]) -> T:
    """Run a command's coroutine; turn expected failures into one-line errors."""
    try:
        return asyncio.run(work)  # type: ignore[arg-type]
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except Exception as exc:
        if target.debug:
            raise
        raise CommandError(explain(exc, target)) from None


def database_options(command: F) -> F:
    """The options every database command takes, gathered into a ``Target`` argument."""

    @click.option("--url", envvar=URL_ENV, default=_dialect.DEFAULT_URL, show_default=True,
                  help=f"Database URL (default from ${URL_ENV}).")
    @click.option("--sessions-table", default=DEFAULT_SESSIONS_TABLE, show_default=True)
    @click.option("--messages-table", default=DEFAULT_MESSAGES_TABLE, show_default=True)
    @click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
    @functools.wraps(command)
    def wrapper(
        url: str, sessions_table: str, messages_table: str, debug: bool, **kwargs: Any
    ) -> Any:
        return command(Target(url, sessions_table, messages_table, debug), **kwargs)

    return wrapper  # type: ignore[return-value]


@asynccontextmanager
async def open_store(target: Target, url: str | URL | None = None) -> AsyncIterator[SessionStore]:
    """The store for ``target`` (or for ``url`` with its table names), closed afterwards."""
    store = SessionStore(
        _dialect.async_url(url or target.url),
        sessions_table=target.sessions_table,
        messages_table=target.messages_table,
    )
    try:
        yield store
    finally:
        await store.close()


def has_table(conn: Connection, name: str) -> bool:
    """True when the database behind ``conn`` has a table called ``name``."""
    return inspect(conn).has_table(name)


async def require_schema(store: SessionStore, target: Target) -> None:
    """Fail with what to run when the tables are missing or the schema is behind."""
    url = store.engine.url
    # Connecting would create an empty file; a typo in the path should not do that.
    file = url.database if url.get_backend_name() == "sqlite" and not url.query.get("uri") else None
    if file not in (None, "", ":memory:") and not Path(str(file)).exists():  # noqa: ASYNC240
        raise CommandError(
            f"no database file {file!r}; check the path, or create it with: "
            f"agent-session-store upgrade --url '{target.shown_url}'"
        )
    async with store.engine.connect() as conn:
        present = await conn.run_sync(has_table, store.sessions_table)
    if not present:
        raise CommandError(
            f"no {store.sessions_table!r} table at {target.shown_url}; "
            f"run: agent-session-store upgrade --url '{target.shown_url}'"
        )
    from agent_session_store import migrate  # here, not at the top: Alembic is slow to import

    # Tables made by create_tables() or the SDK carry no revision: usable, nothing to compare.
    tables = table_names(store)
    if await migrate.current(store.engine, **tables) is not None:
        await migrate.check(store.engine, **tables)


async def prepare_schema(store: SessionStore) -> None:
    """Bring the tables to head, creating them or adopting tables the SDK made."""
    from agent_session_store import migrate

    await migrate.upgrade(store.engine, **table_names(store))


def table_names(store: SessionStore) -> dict[str, str]:
    """The table-name keyword arguments of the migrate API, for ``store``."""
    return {"sessions_table": store.sessions_table, "messages_table": store.messages_table}


def progress(console: Console) -> Progress:
    """A progress bar on stderr; silent when stderr is not a terminal."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=console, transient=True,
    )
