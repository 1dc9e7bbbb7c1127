"""Which of the three databases the store speaks a SQLAlchemy dialect is: by class, not name.

A PostgreSQL-compatible engine (CockroachDB, YugabyteDB, ...) ships a dialect that subclasses
SQLAlchemy's PostgreSQL dialect under its own ``name``; MariaDB's dialect subclasses MySQL's.
Testing ``dialect.name == "postgresql"`` sent those to "not supported"; ``isinstance`` sends
them to the SQL they speak. A dialect of none of the three families is refused when the store
is made, with one message.
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy.dialects.mysql.base import MySQLDialect
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import Dialect

from agent_session_store.errors import UnsupportedDatabaseError


class Family(enum.Enum):
    """The SQL a dialect speaks, as far as the store is concerned."""

    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"
    MYSQL = "mysql"


_CLASSES: tuple[tuple[type[Any], Family], ...] = (
    (PGDialect, Family.POSTGRESQL),
    (MySQLDialect, Family.MYSQL),
    (SQLiteDialect, Family.SQLITE),
)


def family_of(dialect: Dialect | type[Dialect]) -> Family:
    """The family of ``dialect`` (an instance or a class), or ``UnsupportedDatabaseError``."""
    cls = dialect if isinstance(dialect, type) else type(dialect)
    for base, family in _CLASSES:
        if issubclass(cls, base):
            return family
    raise UnsupportedDatabaseError(
        f"agent-session-store runs on SQLite, PostgreSQL (and dialects built on SQLAlchemy's "
        f"PostgreSQL dialect) or MySQL/MariaDB, and the {getattr(cls, 'name', cls.__name__)!r} "
        f"dialect ({cls.__module__}.{cls.__name__}) is none of them; use an engine of one "
        "of those databases"
    )


def known_family(dialect: Dialect | type[Dialect]) -> Family | None:
    """The family of ``dialect``, or None (``str()`` of a statement compiles on a generic one)."""
    cls = dialect if isinstance(dialect, type) else type(dialect)
    return next((family for base, family in _CLASSES if issubclass(cls, base)), None)


def is_postgresql(dialect: Dialect | type[Dialect]) -> bool:
    """True for SQLAlchemy's PostgreSQL dialect and every dialect built on it."""
    cls = dialect if isinstance(dialect, type) else type(dialect)
    return issubclass(cls, PGDialect)


def is_mysql(dialect: Dialect | type[Dialect]) -> bool:
    """True for MySQL and MariaDB, whatever driver."""
    cls = dialect if isinstance(dialect, type) else type(dialect)
    return issubclass(cls, MySQLDialect)


def is_sqlite(dialect: Dialect | type[Dialect]) -> bool:
    """True for SQLite, whatever driver."""
    cls = dialect if isinstance(dialect, type) else type(dialect)
    return issubclass(cls, SQLiteDialect)
