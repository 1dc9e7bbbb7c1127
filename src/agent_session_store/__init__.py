"""agent-session-store: conversation history for AI agents, stored through SQLAlchemy.

Start with :class:`SessionStore` (one engine and a pair of tables) and its
:meth:`SessionStore.session`, which returns a :class:`SQLAlchemySession` satisfying the OpenAI
Agents SDK's ``Session`` protocol.
"""

from agent_session_store.admin import (
    ImportResult,
    PruneResult,
    SessionInfo,
    SessionPage,
)
from agent_session_store.errors import (
    AgentSessionStoreError,
    CommitOutcomeUnknownError,
    DatabaseConnectionError,
    DriverNotInstalledError,
    InvalidIdentifierError,
    InvalidItemError,
    InvalidRecordError,
    InvalidSessionSettingsError,
    ItemTooLargeError,
    MigrationError,
    SchemaOutOfDateError,
    StoreClosedError,
    WrongEventLoopError,
)
from agent_session_store.migrate import check, current, downgrade, upgrade
from agent_session_store.models import (
    AgentMessage,
    AgentSession,
    Base,
    ModelPair,
    UTCDateTime,
    make_models,
)
from agent_session_store.session import SessionSettings, SQLAlchemySession
from agent_session_store.store import SessionStore

__all__ = [
    "AgentMessage",
    "AgentSession",
    "AgentSessionStoreError",
    "Base",
    "CommitOutcomeUnknownError",
    "DatabaseConnectionError",
    "DriverNotInstalledError",
    "ImportResult",
    "InvalidIdentifierError",
    "InvalidItemError",
    "InvalidRecordError",
    "InvalidSessionSettingsError",
    "ItemTooLargeError",
    "MigrationError",
    "ModelPair",
    "PruneResult",
    "SQLAlchemySession",
    "SchemaOutOfDateError",
    "SessionInfo",
    "SessionPage",
    "SessionSettings",
    "SessionStore",
    "StoreClosedError",
    "UTCDateTime",
    "WrongEventLoopError",
    "check",
    "current",
    "downgrade",
    "make_models",
    "upgrade",
]

__version__ = "0.1.0"
