"""Create the sessions and messages tables, or adopt the ones the Agents SDK created.

Revision ID: agent_session_store_0001
Revises:
Create Date: 2026-11-24

Tables already there without a version row (written by the SDK's ``SQLiteSession``,
``AsyncSQLiteSession`` or ``SQLAlchemySession``, or by ``SessionStore.create_tables()``) are
brought to this revision's schema in place: every row kept, every id unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.compiler import compiles

from agent_session_store._family import is_mysql, is_postgresql, is_sqlite
from agent_session_store.errors import MigrationError
from agent_session_store.migrate import configured_tables
from agent_session_store.models import (
    MessageIdType,
    MessageTextType,
    UTCDateTime,
    utcnow,
)

revision: str = "agent_session_store_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("agent_session_store",)
depends_on: str | Sequence[str] | None = None

MAX_SESSION_ID = 255
SESSION_ID = sa.String(MAX_SESSION_ID).with_variant(
    mysql.VARCHAR(MAX_SESSION_ID, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
# Chosen by dialect class (models.FamilyType): LONGTEXT on MySQL/MariaDB, INTEGER (the rowid
# alias) ids on SQLite.
MESSAGE_TEXT = MessageTextType()
MESSAGE_ID = MessageIdType()
TABLE_OPTIONS: dict[str, Any] = {
    "mysql_charset": "utf8mb4",
    "mysql_engine": "InnoDB",
    "mariadb_engine": "InnoDB",
}
SESSION_COLUMNS = ("session_id", "created_at", "updated_at")
MESSAGE_COLUMNS = ("id", "session_id", "message_data", "created_at")
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%f000"


def derived_name(*parts: str) -> str:
    name = "_".join(parts)
    if len(name) <= 63:
        return name
    return f"{name[:54]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def timestamp(name: str) -> sa.Column[Any]:
    return sa.Column(name, UTCDateTime(), nullable=False, server_default=utcnow())


def sessions_table(name: str) -> list[Any]:
    return [
        sa.Column("session_id", SESSION_ID, nullable=False),
        timestamp("created_at"),
        timestamp("updated_at"),
        sa.PrimaryKeyConstraint("session_id", name=op.f(f"pk_{name}")),
    ]


def messages_table(name: str, sessions: str) -> list[Any]:
    return [
        sa.Column("id", MESSAGE_ID, nullable=False, autoincrement=True),
        sa.Column("session_id", SESSION_ID, nullable=False),
        sa.Column("message_data", MESSAGE_TEXT, nullable=False),
        timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        foreign_key(name, sessions),
    ]


def foreign_key(messages: str, sessions: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["session_id"],
        [f"{sessions}.session_id"],
        name=op.f(f"fk_{messages}_session_id_{sessions}"),
        ondelete="CASCADE",
    )


def index_name(messages: str) -> str:
    return derived_name("idx", messages, "session_id")


def upgrade() -> None:
    sessions, messages = configured_tables(op.get_context())
    existing: set[str] = set()
    if not context.is_offline_mode():
        existing = {sessions, messages} & set(sa.inspect(op.get_bind()).get_table_names())
    if not existing:
        create(sessions, messages)
    elif existing == {sessions, messages}:
        if made_by_a_later_create_tables(sessions):
            return  # already this revision's schema and more; later revisions see what is there
        adopt(sessions, messages)
    else:
        missing = ({sessions, messages} - existing).pop()
        raise MigrationError(
            f"table {existing.pop()!r} exists but {missing!r} does not; agent-session-store "
            "adopts both tables or creates both. Drop or rename the one there, or create the "
            "other by hand, then upgrade again"
        )


def create(sessions: str, messages: str) -> None:
    op.create_table(sessions, *sessions_table(sessions), **TABLE_OPTIONS)
    op.create_table(
        messages, *messages_table(messages, sessions), sqlite_autoincrement=True, **TABLE_OPTIONS
    )
    op.create_index(index_name(messages), messages, ["session_id", "id"])


def made_by_a_later_create_tables(sessions: str) -> bool:
    # ``create_tables()`` of a version at revision 0002 or later writes the owner column too.
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns(sessions)}
    return "user_id" in columns and set(SESSION_COLUMNS) <= columns


def downgrade() -> None:
    sessions, messages = configured_tables(op.get_context())
    # The index goes with its table; MySQL refuses to drop it first, as the foreign key uses it.
    op.drop_table(messages)
    op.drop_table(sessions)


# -- adoption ------------------------------------------------------------------------------


def adopt(sessions: str, messages: str) -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table, expected in ((sessions, SESSION_COLUMNS), (messages, MESSAGE_COLUMNS)):
        found = {column["name"] for column in inspector.get_columns(table)}
        if found != set(expected):
            raise MigrationError(
                f"table {table!r} has columns {sorted(found)}, not {sorted(expected)}: it was "
                "not created by the Agents SDK or agent-session-store, so it cannot be adopted"
            )
    check_session_ids(bind, sessions, messages)
    if is_sqlite(bind.dialect):
        rebuild_sqlite(sessions, messages)
        return
    fks = [fk for fk in inspector.get_foreign_keys(messages) if fk["referred_table"] == sessions]
    indexes = inspector.get_indexes(messages)
    pk_name = inspector.get_pk_constraint(sessions).get("name")
    messages_pk_name = inspector.get_pk_constraint(messages).get("name")
    # Named on PostgreSQL and MySQL/MariaDB, which name every constraint and index.
    for fk in fks:
        op.drop_constraint(str(fk["name"]), messages, type_="foreignkey")
    for index in indexes:
        if index["name"] != index_name(messages):
            op.drop_index(str(index["name"]), table_name=messages)
    if is_postgresql(bind.dialect):
        rename_primary_key(sessions, pk_name, "session_id")
        rename_primary_key(messages, messages_pk_name, "id")
    fill_null_timestamps(sessions, ("created_at", "updated_at"))
    fill_null_timestamps(messages, ("created_at",))
    alter_columns(bind, sessions, messages)
    op.create_foreign_key(
        op.f(f"fk_{messages}_session_id_{sessions}"),
        messages,
        sessions,
        ["session_id"],
        ["session_id"],
        ondelete="CASCADE",
    )
    if not any(index["name"] == index_name(messages) for index in indexes):
        op.create_index(index_name(messages), messages, ["session_id", "id"])


def check_session_ids(bind: sa.Connection, sessions: str, messages: str) -> None:
    length = sa.func.length if is_sqlite(bind.dialect) else sa.func.char_length
    for table in (sessions, messages):
        session_id = sa.column("session_id", sa.Text())
        query = sa.select(sa.func.count()).select_from(sa.table(table, session_id))
        too_long = bind.execute(query.where(length(session_id) > MAX_SESSION_ID)).scalar()
        if too_long:
            raise MigrationError(
                f"{too_long} rows of {table!r} have a session_id longer than {MAX_SESSION_ID} "
                "characters, which agent-session-store cannot store; shorten them (in both "
                "tables), then upgrade again. Nothing was changed"
            )


def fill_null_timestamps(table: str, columns: Sequence[str]) -> None:
    # The SDK's SQLite tables allow NULL timestamps; ours do not.
    for name in columns:
        column = sa.column(name, UTCDateTime())
        op.execute(
            sa.update(sa.table(table, column)).where(column.is_(None)).values({name: utcnow()})
        )


def rename_primary_key(table: str, name: str | None, column: str) -> None:
    wanted = op.f(f"pk_{table}")
    if name is not None and name != wanted:
        op.drop_constraint(name, table, type_="primary")
        op.create_primary_key(wanted, table, [column])


def alter_columns(bind: sa.Connection, sessions: str, messages: str) -> None:
    mysql_family = is_mysql(bind.dialect)
    if mysql_family:
        # Converting TIMESTAMP to DATETIME goes through the session time zone: make it UTC,
        # the zone UTCDateTime stores.
        saved_zone = bind.execute(sa.text("SELECT @@session.time_zone")).scalar()
        bind.execute(sa.text("SET time_zone = '+00:00'"))
    try:
        for table in (sessions, messages):
            op.alter_column(table, "session_id", type_=SESSION_ID, existing_nullable=False)
        for table, names in ((sessions, ("created_at", "updated_at")), (messages, ("created_at",))):
            for name in names:
                op.alter_column(
                    table, name, type_=UTCDateTime(), server_default=utcnow(), nullable=False
                )
        # Only MySQL needs to be told again that id is AUTO_INCREMENT; PostgreSQL keeps its
        # sequence default through the type change.
        increment: dict[str, Any] = {"autoincrement": True} if mysql_family else {}
        op.alter_column(messages, "id", type_=MESSAGE_ID, existing_nullable=False, **increment)
        op.alter_column(messages, "message_data", type_=MESSAGE_TEXT, existing_nullable=False)
    finally:
        if mysql_family:
            bind.execute(sa.text("SET time_zone = :zone"), {"zone": saved_zone})
    if is_postgresql(bind.dialect):
        widen_sequence(bind, messages)


def widen_sequence(bind: sa.Connection, messages: str) -> None:
    # A SERIAL column's sequence stops at 2**31 even after the column becomes BIGINT.
    table = bind.dialect.identifier_preparer.quote(messages)
    sequence = bind.execute(
        sa.select(sa.func.pg_get_serial_sequence(sa.literal(table), sa.literal("id")))
    ).scalar()
    if sequence is not None:
        schema, _, name = sequence.rpartition(".")
        op.execute(AlterSequenceAsBigint(name.strip('"'), schema.strip('"') or None))


class AlterSequenceAsBigint(sa.schema.ExecutableDDLElement):
    inherit_cache = False

    def __init__(self, name: str, schema: str | None) -> None:
        self.sequence = sa.Sequence(name, schema=schema)


@compiles(AlterSequenceAsBigint)
def _alter_sequence(element: AlterSequenceAsBigint, compiler: Any, **kw: Any) -> str:
    return f"ALTER SEQUENCE {compiler.preparer.format_sequence(element.sequence)} AS BIGINT"


def rebuild_sqlite(sessions: str, messages: str) -> None:
    """Copy both tables into fresh ones of this revision's schema, then swap them in.

    What batch mode does, with the new tables' exact definitions instead of reflected ones.
    The caller runs this with foreign keys off, so dropping the old tables cascades nothing.
    """
    if op.get_bind().exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise MigrationError(
            "SQLite foreign keys are on for this migration's connection: dropping the old "
            f"{sessions!r} table would cascade-delete every message. Run the upgrade on a "
            "connection outside a transaction (agent_session_store.upgrade() and alembic do), "
            "or turn foreign keys off first. Nothing was changed"
        )
    copies = {sessions: f"_ass_adopt_{sessions}", messages: f"_ass_adopt_{messages}"}
    op.create_table(copies[sessions], *sessions_table(sessions))
    op.create_table(
        copies[messages], *messages_table(messages, sessions), sqlite_autoincrement=True
    )
    for table, columns in ((sessions, SESSION_COLUMNS), (messages, MESSAGE_COLUMNS)):
        source = sa.table(table, *(sa.column(name) for name in columns))
        values = [
            normalised_time(source.c[name]) if name.endswith("_at") else source.c[name]
            for name in columns
        ]
        target = sa.table(copies[table], *(sa.column(name) for name in columns))
        select = sa.select(*values)
        if table == messages:
            select = select.order_by(source.c.id)
        op.execute(sa.insert(target).from_select(list(columns), select))
    for table in (messages, sessions):
        op.drop_table(table)
        op.rename_table(copies[table], table)
    op.create_index(index_name(messages), messages, ["session_id", "id"])


def normalised_time(column: sa.ColumnClause[Any]) -> sa.ColumnElement[Any]:
    # The SDK stores 'YYYY-MM-DD HH:MM:SS'; ours adds microseconds so text order is time order.
    now = sa.func.strftime(SQLITE_TIME_FORMAT, "now")
    return sa.func.coalesce(sa.func.strftime(SQLITE_TIME_FORMAT, column), column, now)
