"""Idempotency keys of add_items batches: a third table, ``<messages_table>_keys``.

Revision ID: agent_session_store_0005
Revises: agent_session_store_0002
Create Date: 2026-12-02

One row per batch: ``(session_id, idempotency_key)`` is the primary key that refuses a
second copy of a batch, ``created_at`` (indexed) is what ``purge_keys`` deletes old keys by,
and the foreign key to the sessions table (``ON DELETE CASCADE``) takes a session's keys
with it. Existing sessions and messages are not touched: batches written before this
revision have no key, which only means they cannot be recognised if sent again. Tables that
``create_tables()`` of this version made already have the keys table; it is left as it is.
The types and names are written out here so later changes to the models never change what
this revision did.
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

revision: str = "agent_session_store_0005"
down_revision: str | Sequence[str] | None = "agent_session_store_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = sa.String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
TABLE_OPTIONS: dict[str, Any] = {
    "mysql_charset": "utf8mb4",
    "mysql_engine": "InnoDB",
    "mariadb_engine": "InnoDB",
}


def derived_name(*parts: str) -> str:
    name = "_".join(parts)
    if len(name) <= 63:
        return name
    return f"{name[:54]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def upgrade() -> None:
    sessions, messages = configured_tables(op.get_context())
    keys = derived_name(messages, "keys")
    if not context.is_offline_mode() and keys in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        keys,
        sa.Column("session_id", KEY, nullable=False),
        sa.Column("idempotency_key", KEY, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=utcnow()),
        sa.PrimaryKeyConstraint("session_id", "idempotency_key", name=op.f(f"pk_{keys}")),
        sa.ForeignKeyConstraint(
            ["session_id"],
            [f"{sessions}.session_id"],
            name=op.f(f"fk_{keys}_session_id_{sessions}"),
            ondelete="CASCADE",
        ),
        **TABLE_OPTIONS,
    )
    op.create_index(derived_name("ix", keys, "created"), keys, ["created_at"])


def downgrade() -> None:
    _, messages = configured_tables(op.get_context())
    op.drop_table(derived_name(messages, "keys"))
