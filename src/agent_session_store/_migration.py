"""What the Alembic environment and the revisions share: table names, version table, lock.

Table names travel from whoever starts a migration (``upgrade()``, ``alembic -x``, a host's
``env.py``) to every revision through one ``context.configure`` option, :data:`TABLES_OPTION`.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import MetaData, text
from sqlalchemy.engine import URL, Connection

from agent_session_store._cluster_lock import cluster_lock, is_galera
from agent_session_store._family import Family, family_of
from agent_session_store.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidIdentifierError,
    MigrationError,
)
from agent_session_store.models import (
    DEFAULT_MESSAGES_TABLE,
    DEFAULT_SESSIONS_TABLE,
    archive_table_name,
    check_identifier,
    derived_name,
    keys_table_name,
    make_models,
    usage_table_name,
)

#: The ``context.configure`` option holding ``{"sessions_table": ..., "messages_table": ...}``.
TABLES_OPTION = "agent_session_store_tables"
#: Branch label of this package's revisions, for ``alembic upgrade agent_session_store@head``.
BRANCH_LABEL = "agent_session_store"
#: Seconds a MySQL/MariaDB upgrade waits for another process's upgrade to finish.
LOCK_TIMEOUT_S = 600
#: Overrides, in seconds, when a Galera lock row whose holder cannot be checked is stale.
LOCK_STALE_AFTER_ENV = "AGENT_SESSION_STORE_LOCK_STALE_AFTER"
#: The sessions table's columns of revision 0002 (records) and 0003 (forks), in drop order.
RECORD_COLUMNS = ("expires_at", "metadata", "title", "user_id")
FORK_COLUMNS = ("forked_from_item_id", "forked_from_session_id")


def table_names(
    sessions_table: str | None = None, messages_table: str | None = None
) -> tuple[str, str]:
    """Validated table names, defaults filled in."""
    sessions = check_identifier(sessions_table or DEFAULT_SESSIONS_TABLE, "sessions_table")
    messages = check_identifier(messages_table or DEFAULT_MESSAGES_TABLE, "messages_table")
    if sessions == messages:
        raise InvalidIdentifierError("sessions_table and messages_table must differ")
    return sessions, messages


def tables_from_opts(opts: Mapping[str, Any]) -> tuple[str, str]:
    """The table names a migration context was configured with (defaults when none)."""
    names = opts.get(TABLES_OPTION) or {}
    unknown = set(names) - {"sessions_table", "messages_table"}
    if unknown:
        raise MigrationError(
            f"unknown keys {sorted(unknown)} in the {TABLES_OPTION!r} migration option; "
            "use sessions_table and messages_table"
        )
    return table_names(names.get("sessions_table"), names.get("messages_table"))


#: The newest revision in ``migrations/versions`` (``tests/test_startup.py`` holds them equal).
#: Known without Alembic, so a command can see that a database is at head without importing it.
HEAD_REVISION = "agent_session_store_0005"


def version_table(sessions_table: str) -> str:
    """The version table of a standalone run: apart from any host's ``alembic_version``."""
    return derived_name(sessions_table, "alembic_version")


def target_metadata(sessions_table: str, messages_table: str) -> MetaData:
    """The metadata holding the models for these table names."""
    pair = make_models(sessions_table=sessions_table, messages_table=messages_table)
    metadata: MetaData = pair.AgentSession.__table__.metadata  # type: ignore[attr-defined]
    return metadata


def store_tables(sessions_table: str, messages_table: str) -> tuple[str, ...]:
    """Every table of one store: sessions, messages, the archive, the idempotency keys, usage."""
    return (
        sessions_table,
        messages_table,
        archive_table_name(messages_table),
        keys_table_name(messages_table),
        usage_table_name(sessions_table),
    )


@dataclass(frozen=True)
class Drop:
    """One table, or some columns of one, that a revision's ``downgrade()`` drops."""

    table: str
    holds: str
    columns: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.columns:
            return f"columns {', '.join(self.columns)} of {self.table!r} ({self.holds})"
        return f"table {self.table!r} ({self.holds})"


def dropped_by(revision: str, sessions_table: str, messages_table: str) -> tuple[Drop, ...]:
    """What undoing ``revision`` drops, with its rows: what ``downgrade`` must name before it asks.

    Kept next to the names the revisions derive, not read from them: the CLI says it without
    running anything. ``tests/test_cli_migrate.py`` holds it true, step by step: every table
    named exists before that step and is gone after it, every column likewise.
    """
    s, m = sessions_table, messages_table
    drops = {
        "agent_session_store_0005": (Drop(keys_table_name(m), "idempotency keys"),),
        "agent_session_store_0004": (Drop(usage_table_name(s), "usage rows"),),
        "agent_session_store_0003": (
            Drop(archive_table_name(m), "archived items"),
            Drop(s, "where each fork came from", FORK_COLUMNS),
        ),
        "agent_session_store_0002": (
            Drop(s, "owners, titles, metadata, expiry", RECORD_COLUMNS),
        ),
        "agent_session_store_0001": (Drop(s, "every session"), Drop(m, "every item")),
    }
    return drops.get(revision, ())


def downgrade_drops(
    revisions: Iterable[str], sessions_table: str, messages_table: str
) -> list[Drop]:
    """What undoing ``revisions`` (newest first) drops; no columns of a table dropped too."""
    drops = [d for rev in revisions for d in dropped_by(rev, sessions_table, messages_table)]
    gone = {d.table for d in drops if not d.columns}
    return [d for d in drops if not d.columns or d.table not in gone]


def include_only(*tables: str) -> Callable[..., bool]:
    """An Alembic ``include_name`` hook that sees only ``tables`` (and what they hold)."""
    wanted = set(tables)

    def include_name(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
        if type_ == "table":
            return name in wanted
        return True

    return include_name


def _lock_key(name: str) -> int:
    # pg_advisory_lock takes a signed 64-bit key; a stable hash of the version table's name.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def migration_lock(
    connection: Connection, name: str, *, stale_after: float | None = None
) -> Iterator[None]:
    """Hold a lock so that one process at a time migrates these tables.

    PostgreSQL takes a session advisory lock and MySQL/MariaDB a named lock, both released
    on exit (and by the server when the holder's connection dies), and leave no transaction
    open so Alembic can run one per revision. On Galera the lock is a row
    (:mod:`agent_session_store._cluster_lock`): a holder seen to be disconnected is taken over
    at once, one that cannot be checked once its row is ``stale_after`` seconds old (default:
    ``$AGENT_SESSION_STORE_LOCK_STALE_AFTER``, else 600). SQLite opens
    a write transaction (``BEGIN IMMEDIATE``) that the whole run happens in, committed on exit,
    with foreign keys off: rebuilding a parent table with them on would cascade-delete rows.
    A connection already in a transaction belongs to the caller; it is used as it is.
    """
    if stale_after is not None:
        stale_after = check_stale_after(stale_after)
    if connection.in_transaction():
        yield
        return
    dialect = family_of(connection.dialect)
    if dialect is Family.POSTGRESQL:
        key = {"key": _lock_key(name)}
        connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
        connection.commit()
        try:
            yield
        finally:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
            connection.commit()
    elif dialect is Family.MYSQL:
        # MySQL limits lock names to 64 characters.
        lock_name = derived_name("ass", name)[:64]
        if is_galera(connection):
            stale = lock_stale_after() if stale_after is None else stale_after
            with cluster_lock(connection, lock_name, timeout=LOCK_TIMEOUT_S, stale_after=stale):
                yield
            return
        got = connection.execute(
            text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": lock_name, "timeout": LOCK_TIMEOUT_S},
        ).scalar()
        connection.commit()
        if got != 1:
            raise MigrationError(
                f"another process held the migration lock {lock_name!r} for {LOCK_TIMEOUT_S}s; "
                "check that no upgrade is stuck, then run the upgrade again"
            )
        try:
            yield
        finally:
            connection.rollback()
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": lock_name})
            connection.commit()
    elif dialect is Family.SQLITE:
        with _sqlite_write_transaction(connection):
            yield
    else:
        yield


def lock_stale_after() -> float:
    """Seconds after which an uncheckable Galera lock holder is taken over: env, else 600."""
    raw = os.environ.get(LOCK_STALE_AFTER_ENV)
    if raw is None or not raw.strip():
        return float(LOCK_TIMEOUT_S)
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgumentError(
            f"{LOCK_STALE_AFTER_ENV} must be a number of seconds, got {raw!r}"
        ) from None
    return check_stale_after(value, LOCK_STALE_AFTER_ENV)


def check_stale_after(value: object, name: str = "stale_after") -> float:
    """``value`` as seconds if it is a positive finite number, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


@contextmanager
def _sqlite_write_transaction(connection: Connection) -> Iterator[None]:
    dbapi_connection: Any = connection.connection.dbapi_connection
    saved_isolation = dbapi_connection.isolation_level
    foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
    connection.commit()
    # Without a driver-managed BEGIN, our BEGIN IMMEDIATE takes the write lock up front and
    # DDL runs inside the transaction instead of autocommitting.
    dbapi_connection.isolation_level = None
    try:
        connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
        connection.commit()
        with connection.begin():
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield
    finally:
        if connection.in_transaction():
            connection.rollback()
        connection.exec_driver_sql(f"PRAGMA foreign_keys = {1 if foreign_keys else 0:d}")
        connection.commit()
        dbapi_connection.isolation_level = saved_isolation


def describe_diff(diff: Any) -> str:
    """One difference found by Alembic's ``compare_metadata``, in words."""
    if isinstance(diff, list):  # column modifications come grouped per column
        return ", ".join(describe_diff(item) for item in diff)
    kind = diff[0]
    if kind.startswith("modify_"):
        _, _, table, column, _, old, new = diff
        return f"{kind} {table}.{column} ({old!r} in the database, {new!r} in the models)"
    if kind in ("add_column", "remove_column"):
        return f"{kind} {diff[2]}.{diff[3].name}"
    return f"{kind} {getattr(diff[1], 'name', diff[1])}"


def out_of_date_message(
    url: URL, found: str | None, needed: str, sessions: str, messages: str, known: bool
) -> str:
    """What ``check`` says when the database is at ``found`` and the package needs ``needed``.

    ``known`` tells whether this package ships revision ``found``.
    """
    shown = url.render_as_string(hide_password=True)
    names = ""
    if (sessions, messages) != (DEFAULT_SESSIONS_TABLE, DEFAULT_MESSAGES_TABLE):
        names = f" --sessions-table {sessions} --messages-table {messages}"
    run = f"agent-session-store upgrade --url '{shown}'{names}"
    if found is None:
        return (
            f"database has no agent-session-store revision for tables {sessions!r}/{messages!r} "
            f"(no version row), package needs {needed}; run: {run} "
            "(or await agent_session_store.upgrade(...)); it also adopts existing tables"
        )
    if not known:
        return (
            f"database at revision {found}, which this agent-session-store does not know "
            f"(written by a newer version?), package needs {needed}; upgrade the package, or "
            "downgrade the database with the version that wrote it"
        )
    return f"database at revision {found}, package needs {needed}; run: {run}"
