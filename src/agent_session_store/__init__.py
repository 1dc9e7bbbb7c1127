"""agent-session-store: conversation history for AI agents, stored through SQLAlchemy.

Start with :class:`SessionStore` (one engine and a pair of tables) and its
:meth:`SessionStore.session`, which returns a :class:`SQLAlchemySession` satisfying the OpenAI
Agents SDK's ``Session`` protocol.

Every public name but the exceptions is imported on first use (PEP 562): ``import
agent_session_store`` costs nothing, so ``agent-session-store --version`` starts without
SQLAlchemy, and only the migration functions (:func:`upgrade`, :func:`downgrade`,
:func:`current`, :func:`check`, :mod:`~agent_session_store.migrate`) bring in Alembic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agent_session_store.errors import (
    AgentSessionStoreError,
    ArgumentTypeError,
    CommitOutcomeUnknownError,
    DatabaseConnectionError,
    DriverNotInstalledError,
    InvalidArgumentError,
    InvalidIdentifierError,
    InvalidItemError,
    InvalidMetadataError,
    InvalidRecordError,
    InvalidSessionSettingsError,
    ItemTooLargeError,
    MigrationError,
    SchemaOutOfDateError,
    SessionExistsError,
    SessionNotFoundError,
    SessionOwnershipError,
    StoreClosedError,
    UnsupportedDatabaseError,
    WrongEventLoopError,
)

if TYPE_CHECKING:
    from agent_session_store import migrate
    from agent_session_store._dialect import async_url
    from agent_session_store.admin import (
        ImportResult,
        PruneResult,
        SessionInfo,
        SessionPage,
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
    from agent_session_store.records import RecordPage, Removed, SessionRecord, SessionRecords
    from agent_session_store.session import SessionSettings, SQLAlchemySession
    from agent_session_store.store import SessionStore

__all__ = [
    "AgentMessage",
    "AgentSession",
    "AgentSessionStoreError",
    "ArgumentTypeError",
    "Base",
    "CommitOutcomeUnknownError",
    "DatabaseConnectionError",
    "DriverNotInstalledError",
    "ImportResult",
    "InvalidArgumentError",
    "InvalidIdentifierError",
    "InvalidItemError",
    "InvalidMetadataError",
    "InvalidRecordError",
    "InvalidSessionSettingsError",
    "ItemTooLargeError",
    "MigrationError",
    "ModelPair",
    "PruneResult",
    "RecordPage",
    "Removed",
    "SQLAlchemySession",
    "SchemaOutOfDateError",
    "SessionExistsError",
    "SessionInfo",
    "SessionNotFoundError",
    "SessionOwnershipError",
    "SessionPage",
    "SessionRecord",
    "SessionRecords",
    "SessionSettings",
    "SessionStore",
    "StoreClosedError",
    "UTCDateTime",
    "UnsupportedDatabaseError",
    "WrongEventLoopError",
    "async_url",
    "check",
    "current",
    "downgrade",
    "make_models",
    "migrate",
    "upgrade",
]

#: The package version; pyproject.toml reads it from here.
__version__ = "0.1.0"

#: Names imported on first access (PEP 562), each from its module.
_LAZY = {
    "AgentMessage": "agent_session_store.models",
    "AgentSession": "agent_session_store.models",
    "Base": "agent_session_store.models",
    "ImportResult": "agent_session_store.admin",
    "ModelPair": "agent_session_store.models",
    "PruneResult": "agent_session_store.admin",
    "RecordPage": "agent_session_store.records",
    "Removed": "agent_session_store.records",
    "SQLAlchemySession": "agent_session_store.session",
    "SessionInfo": "agent_session_store.admin",
    "SessionPage": "agent_session_store.admin",
    "SessionRecord": "agent_session_store.records",
    "SessionRecords": "agent_session_store.records",
    "SessionSettings": "agent_session_store.session",
    "SessionStore": "agent_session_store.store",
    "UTCDateTime": "agent_session_store.models",
    "async_url": "agent_session_store._dialect",
    "check": "agent_session_store.migrate",
    "current": "agent_session_store.migrate",
    "downgrade": "agent_session_store.migrate",
    "make_models": "agent_session_store.models",
    "migrate": "agent_session_store",
    "upgrade": "agent_session_store.migrate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module == __name__:
        value: Any = importlib.import_module(f"{__name__}.{name}")
    else:
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
