"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Table names are configurable: read them from the migration context, never write literal names.
A revision is frozen history: write its columns and types out here rather than importing the
package's models, whose definitions will move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
from agent_session_store.migrate import configured_tables

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    sessions, messages = configured_tables(op.get_context())
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    sessions, messages = configured_tables(op.get_context())
    ${downgrades if downgrades else "pass"}
