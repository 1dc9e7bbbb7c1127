"""A host application's models: its own tables, and agent-session-store's on the same base."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agent_session_store import make_models
from agent_session_store.models import SessionId

SESSIONS_TABLE = "chat_sessions"
MESSAGES_TABLE = "chat_messages"


class Base(DeclarativeBase):
    """The host's base, with no naming convention of its own."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class ChatTag(Base):
    """Points at our sessions table: the host revision creating it depends on ours."""

    __tablename__ = "chat_tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(
        # Our id type: MySQL/MariaDB want a foreign key's collation to match its target's.
        SessionId,
        ForeignKey(f"{SESSIONS_TABLE}.session_id", ondelete="CASCADE"),
    )
    tag: Mapped[str] = mapped_column(String(50))


ChatSession, ChatMessage = make_models(
    Base, sessions_table=SESSIONS_TABLE, messages_table=MESSAGES_TABLE
)
