"""Tags on agent-session-store's sessions: needs our sessions table first.

Revision ID: host_0002
Revises: host_0001
Depends on: agent_session_store_0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "host_0002"
down_revision = "host_0001"
branch_labels = None
depends_on = "agent_session_store_0001"


def upgrade() -> None:
    op.create_table(
        "chat_tags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "session_id",
            sa.String(255).with_variant(
                mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
            ),
            sa.ForeignKey("chat_sessions.session_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("tag", sa.String(50), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("chat_tags")
