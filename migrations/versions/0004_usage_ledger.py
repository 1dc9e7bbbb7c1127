"""The usage ledger: one row per recorded run, with the indexes its aggregations read.

Revision ID: agent_session_store_0004
Revises: agent_session_store_0003
Create Date: 2026-12-02

A new table, ``<sessions_table>_usage``, so existing rows are not touched (one that
``SessionStore.create_tables()`` made already is kept, its missing indexes added). It has no foreign
key to the sessions table: usage is billing, and outlives the conversation it was spent on.
The types and index names are written out here, as revisions 0001 and 0002 do, so later
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
from agent_session_store.models import MessageIdType, UTCDateTime, utcnow

revision: str = "agent_session_store_0004"
down_revision: str | Sequence[str] | None = "agent_session_store_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: BIGINT, or INTEGER (the rowid alias) on the SQLite family, chosen by dialect class.
ROW_ID = MessageIdType()
SESSION_ID = sa.String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
MODEL = sa.String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
COUNT = sa.BigInteger()
TABLE_OPTIONS: dict[str, Any] = {
    "mysql_charset": "utf8mb4",
    "mysql_engine": "InnoDB",
    "mariadb_engine": "InnoDB",
    "sqlite_autoincrement": True,
}
INDEXES = (
    ("created", ("created_at",)),
    ("user_created", ("user_id", "created_at")),
    ("session_created", ("session_id", "created_at")),
)


def derived_name(*parts: str) -> str:
    name = "_".join(parts)
    if len(name) <= 63:
        return name
    return f"{name[:54]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def usage_columns(name: str) -> list[Any]:
    return [
        sa.Column("id", ROW_ID, nullable=False, autoincrement=True),
        sa.Column("session_id", SESSION_ID, nullable=False),
        sa.Column("user_id", SESSION_ID, nullable=True),
        sa.Column("model", MODEL, nullable=True),
        sa.Column("requests", COUNT, nullable=False),
        sa.Column("input_tokens", COUNT, nullable=False),
        sa.Column("output_tokens", COUNT, nullable=False),
        sa.Column("total_tokens", COUNT, nullable=False),
        sa.Column("cached_tokens", COUNT, nullable=True),
        sa.Column("reasoning_tokens", COUNT, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=utcnow()),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
    ]


def upgrade() -> None:
    sessions, _ = configured_tables(op.get_context())
    usage = derived_name(sessions, "usage")
    # ``create_tables()`` of this version makes the table too; 0001 adopts such databases.
    indexes: set[str] = set()
    exists = False
    if not context.is_offline_mode():
        inspector = sa.inspect(op.get_bind())
        exists = inspector.has_table(usage)
        if exists:
            indexes = {str(index["name"]) for index in inspector.get_indexes(usage)}
    if not exists:
        op.create_table(usage, *usage_columns(usage), **TABLE_OPTIONS)
    for suffix, columns in INDEXES:
        name = derived_name("ix", usage, suffix)
        if name not in indexes:
            op.create_index(name, usage, list(columns))


def downgrade() -> None:
    sessions, _ = configured_tables(op.get_context())
    usage = derived_name(sessions, "usage")
    for suffix, _columns in INDEXES:
        op.drop_index(derived_name("ix", usage, suffix), table_name=usage)
    op.drop_table(usage)
