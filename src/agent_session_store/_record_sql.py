"""SQL for session records that differs by dialect: metadata patches, containment, expiry times.

Metadata is a JSON object whose top-level keys an update replaces one by one (``None`` removes
a key), applied in the database so concurrent updates of different keys never lose one
another. Each dialect gets the same meaning: PostgreSQL ``(metadata - removed) || set``,
MySQL/MariaDB ``JSON_SET(JSON_REMOVE(...))`` and SQLite ``json_set(json_remove(...))``. The
standard merge-patch functions (``JSON_MERGE_PATCH``, ``json_patch``) would merge nested
objects key by key where PostgreSQL's ``||`` replaces them, so the three would disagree.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    func,
    literal,
    true,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from agent_session_store._family import Family, is_mysql, is_postgresql, is_sqlite, known_family
from agent_session_store._json import encode
from agent_session_store.errors import ArgumentTypeError, InvalidArgumentError, InvalidMetadataError
from agent_session_store.models import UTCDateTime

#: The largest metadata object, as compact JSON, and the longest key and title.
MAX_METADATA_BYTES = 64 * 1024
MAX_KEY_LENGTH = 255
MAX_TITLE_LENGTH = 1_000
_SCALARS = (str, int, float, bool)


def check_patch(patch: object) -> dict[str, Any]:
    r"""Return ``patch`` if it is a usable metadata patch, else raise ``InvalidMetadataError``.

    Keys are non-empty strings of at most 255 characters without ``"``, ``\`` or control
    characters (they become JSON paths); values are strict JSON; the whole is at most 64 KiB.
    """
    if not isinstance(patch, dict):
        raise InvalidMetadataError(f"metadata must be a dict, not {type(patch).__name__}")
    for key in patch:
        check_key(key)
    try:
        size = len(encode(patch).encode())
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidMetadataError(
            f"metadata is not valid JSON: {exc}; nothing was stored"
        ) from None
    if size > MAX_METADATA_BYTES:
        raise InvalidMetadataError(
            f"metadata is {size} bytes as JSON, more than {MAX_METADATA_BYTES}; keep large "
            "data in items, not in metadata. Nothing was stored"
        )
    return patch


def check_key(key: object) -> str:
    """Return ``key`` if it can name a metadata entry, else raise ``InvalidMetadataError``."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidMetadataError(
            f"metadata key {key!r:.40} must be a non-empty str of at most {MAX_KEY_LENGTH} "
            "characters"
        )
    if '"' in key or "\\" in key or not key.isprintable():
        raise InvalidMetadataError(
            f"metadata key {key!r:.40} holds a quote, backslash or control character; "
            "use letters, digits and punctuation such as '-', '_', '.', ':'"
        )
    return key


def check_title(title: object) -> str | None:
    """Return ``title`` if it is None or a str of at most 1,000 characters, else raise."""
    if title is None:
        return None
    if not isinstance(title, str):
        raise InvalidMetadataError(f"title must be a str or None, not {type(title).__name__}")
    if len(title) > MAX_TITLE_LENGTH or "\x00" in title:
        raise InvalidMetadataError(
            f"title must be at most {MAX_TITLE_LENGTH} characters without NUL characters "
            f"(got {len(title)} characters); nothing was stored"
        )
    return title


def patched(dialect: Dialect, column: ColumnElement[Any], patch: dict[str, Any]) -> Any:
    """``column`` with ``patch`` applied: keys set to their values, keys given None removed."""
    removed = [key for key, value in patch.items() if value is None]
    kept = {key: value for key, value in patch.items() if value is not None}
    if is_postgresql(dialect):
        expr: Any = func.coalesce(column, cast(literal("{}"), postgresql.JSONB))
        if removed:
            expr = expr.op("-")(
                cast(literal(removed, postgresql.ARRAY(Text)), postgresql.ARRAY(Text))
            )
        if kept:
            expr = expr.op("||")(cast(literal(encode(kept)), postgresql.JSONB))
        return expr
    json_set, json_remove = (
        (func.json_set, func.json_remove)
        if is_sqlite(dialect)
        else (func.JSON_SET, func.JSON_REMOVE)
    )
    expr = func.coalesce(column, literal("{}"))
    if removed:
        expr = json_remove(expr, *(literal(path(key)) for key in removed))
    if kept:
        pairs: list[Any] = []
        for key, value in kept.items():
            pairs += [literal(path(key)), as_json(dialect, encode(value))]
        expr = json_set(expr, *pairs)
    return expr


def as_json(dialect: Dialect, text: str) -> Any:
    """A JSON value from its text, as the dialect's JSON functions take one."""
    if is_sqlite(dialect):
        return func.json(literal(text))
    # MySQL and MariaDB both read JSON_EXTRACT(text, '$') as a JSON value, not a string.
    return func.JSON_EXTRACT(literal(text), literal("$"))


def path(key: str) -> str:
    """The JSON path of a top-level key (keys are checked to hold no quote or backslash)."""
    return '$."' + key + '"'


def contains(dialect: Dialect, column: ColumnElement[Any], wanted: dict[str, Any]) -> Any:
    """True where the metadata holds every key of ``wanted`` with that (scalar) value."""
    for key, value in wanted.items():
        check_key(key)
        if not isinstance(value, _SCALARS):
            raise InvalidMetadataError(
                f"metadata filter {key!r} must be a str, int, float or bool, not "
                f"{type(value).__name__}"
            )
    if is_postgresql(dialect):
        return column.op("@>")(cast(literal(encode(wanted)), postgresql.JSONB))
    if not is_sqlite(dialect):
        return func.JSON_CONTAINS(column, literal(encode(wanted))) == 1
    clauses = []
    for key, value in wanted.items():
        # json_extract gives SQL values: a JSON true reads 1, so the JSON type is compared too.
        extracted = func.json_extract(column, literal(path(key)))
        kind = func.json_type(column, literal(path(key)))
        if isinstance(value, bool):
            clauses.append(kind == ("true" if value else "false"))
        elif isinstance(value, str):
            clauses.append(and_(kind == "text", extracted == literal(value, String)))
        else:
            clauses.append(and_(kind.in_(["integer", "real"]), extracted == literal(value)))
    return and_(true(), *clauses)


def create_session(dialect: Dialect, sessions: Table, session_id: str, user_id: str | None) -> Any:
    """``INSERT`` the session row owned by ``user_id`` unless a row with that id exists."""
    row = {"session_id": session_id, "user_id": user_id}
    if is_mysql(dialect):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        return (
            mysql_insert(sessions)
            .values(row)
            .on_duplicate_key_update(session_id=sessions.c.session_id)
        )
    if is_postgresql(dialect):
        return postgresql.insert(sessions).values(row).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(sessions).values(row).on_conflict_do_nothing()


class expires_after(FunctionElement[Any]):  # noqa: N801 - reads as a SQL function
    """Now plus the integer number of seconds in the bound parameter, in the column's format."""

    type = UTCDateTime()
    inherit_cache = True


def seconds_of(ttl: timedelta | int | float) -> int:
    """Whole seconds of a time to live, at least 1."""
    if isinstance(ttl, bool) or not isinstance(ttl, (timedelta, int, float)):
        raise ArgumentTypeError(
            f"ttl must be a timedelta or a number of seconds, not {type(ttl).__name__}"
        )
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if seconds < 1:
        raise InvalidArgumentError(f"ttl must be at least one second, got {seconds!r} seconds")
    return int(seconds)


def ttl_param(name: str = "ttl") -> Any:
    """The ``expires_after`` of a bound number of seconds named ``name``."""
    return expires_after(bindparam(name, type_=Integer))


@compiles(expires_after)
def _expires_after(element: expires_after, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    family = known_family(compiler.dialect)
    if family is Family.POSTGRESQL:
        return f"(now() + make_interval(secs => CAST({seconds} AS INTEGER)))"
    if family is Family.MYSQL:
        return f"DATE_ADD(UTC_TIMESTAMP(6), INTERVAL {seconds} SECOND)"
    return f"(strftime('%Y-%m-%d %H:%M:%f000', 'now', '+' || {seconds} || ' seconds'))"
