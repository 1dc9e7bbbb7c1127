"""Sessions as records: owner, title, metadata, expiry, and the indexes listing and expiry use.

Revision ID: agent_session_store_0002
Revises: agent_session_store_0001
Create Date: 2026-12-01

Four nullable columns, so existing rows keep every value and need no backfill: on PostgreSQL
and MySQL/MariaDB adding them is an in-place ``ALTER TABLE``; SQLite runs it in batch mode
(a copy of the sessions table) with foreign keys off, as the Alembic environment arranges.
The types and index names are written out here, as revision 0001 does, so later changes to
the models never change what this revision did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

from agent_session_store.migrate import configured_tables
from agent_session_store.models import MetadataJSON, TitleTextType, UTCDateTime

revision: str = "agent_session_store_0002"
down_revision: str | Sequence[str] | None = "agent_session_store_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USER_ID = sa.String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
TITLE = TitleTextType()
#: JSONB on PostgreSQL and dialects built on it (by class), JSON elsewhere.
METADATA = MetadataJSON()
INDEXES = (
    ("updated", ("updated_at", "session_id")),
    ("user_updated", ("user_id", "updated_at", "session_id")),
    ("expires", ("expires_at",)),
)


def derived_name(*parts: str) -> str:
    name = "_".join(parts)
    if len(name) <= 63:
        return name
    return f"{name[:54]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def new_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("user_id", USER_ID, nullable=True),
        sa.Column("title", TITLE, nullable=True),
        sa.Column("metadata", METADATA, nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
    ]


def upgrade() -> None:
    sessions, _ = configured_tables(op.get_context())
    # Tables that ``create_tables()`` of this version made (then adopted by 0001) have it all.
    columns: set[str] = set()
    indexes: set[str] = set()
    if not context.is_offline_mode():
        inspector = sa.inspect(op.get_bind())
        columns = {column["name"] for column in inspector.get_columns(sessions)}
        indexes = {str(index["name"]) for index in inspector.get_indexes(sessions)}
    missing = [column for column in new_columns() if column.name not in columns]
    if missing:
        with op.batch_alter_table(sessions) as batch:
            for column in missing:
                batch.add_column(column)
    for suffix, names in INDEXES:
        name = derived_name("ix", sessions, suffix)
        if name not in indexes:
            op.create_index(name, sessions, list(names))


def downgrade() -> None:
    sessions, _ = configured_tables(op.get_context())
    for suffix, _columns in INDEXES:
        op.drop_index(derived_name("ix", sessions, suffix), table_name=sessions)
    with op.batch_alter_table(sessions) as batch:
        for name in ("expires_at", "metadata", "title", "user_id"):
            batch.drop_column(name)
