"""History operations: the fork reference on sessions, and the archive table.

Revision ID: agent_session_store_0003
Revises: agent_session_store_0002
Create Date: 2026-12-02

Two nullable columns on the sessions table (``forked_from_session_id``,
``forked_from_item_id``), so existing rows keep every value and need no backfill (SQLite in
batch mode, as 0002), and a new table, ``<messages>_archive``, for the items an archiving
store moves out of the messages table. Types and names are written out here, so later
changes to the models never change what this revision did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

from agent_session_store.migrate import configured_tables
from agent_session_store.models import UTCDateTime, utcnow

revision: str = "agent_session_store_0003"
down_revision: str | Sequence[str] | None = "agent_session_store_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SESSION_ID = sa.String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
MESSAGE_TEXT = sa.Text().with_variant(mysql.LONGTEXT(charset="utf8mb4"), "mysql", "mariadb")
ARCHIVE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB", "mariadb_engine": "InnoDB"}
ARCHIVE_INDEXES = (
    ("session", ("session_id", "id")),
    ("user", ("user_id",)),
    ("archived", ("archived_at",)),
)
FORK_COLUMNS = ("forked_from_session_id", "forked_from_item_id")


def derived_name(*parts: str) -> str:
    name = "_".join(parts)
    if len(name) <= 63:
        return name
    return f"{name[:54]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def fork_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("forked_from_session_id", SESSION_ID, nullable=True),
        sa.Column("forked_from_item_id", sa.BigInteger(), nullable=True),
    ]


def archive_columns() -> list[Any]:
    return [
        sa.Column("id", ARCHIVE_ID, nullable=False, autoincrement=True),
        sa.Column("session_id", SESSION_ID, nullable=False),
        sa.Column("user_id", SESSION_ID, nullable=True),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("message_data", MESSAGE_TEXT, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("archived_at", UTCDateTime(), nullable=False, server_default=utcnow()),
        sa.Column("batch", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
    ]


def upgrade() -> None:
    sessions, messages = configured_tables(op.get_context())
    archive = derived_name(messages, "archive")
    # Tables that ``create_tables()`` of this version made (then adopted) have it all.
    columns: set[str] = set()
    tables: set[str] = set()
    if not context.is_offline_mode():
        inspector = sa.inspect(op.get_bind())
        columns = {column["name"] for column in inspector.get_columns(sessions)}
        tables = set(inspector.get_table_names())
    missing = [column for column in fork_columns() if column.name not in columns]
    if missing:
        with op.batch_alter_table(sessions) as batch:
            for column in missing:
                batch.add_column(column)
    if archive not in tables:
        op.create_table(
            archive,
            *archive_columns(),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{archive}")),
            sqlite_autoincrement=True,
            **TABLE_OPTIONS,
        )
        for suffix, names in ARCHIVE_INDEXES:
            op.create_index(derived_name("ix", archive, suffix), archive, list(names))


def downgrade() -> None:
    sessions, messages = configured_tables(op.get_context())
    op.drop_table(derived_name(messages, "archive"))
    with op.batch_alter_table(sessions) as batch:
        for name in reversed(FORK_COLUMNS):
            batch.drop_column(name)
