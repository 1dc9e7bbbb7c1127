"""Exceptions raised by agent-session-store.

Every exception the library raises on purpose derives from :class:`AgentSessionStoreError`,
and each also derives from the built-in type a caller would naturally catch (``ValueError``
for bad input, ``RuntimeError`` for a database in the wrong state).
"""

from __future__ import annotations


class AgentSessionStoreError(Exception):
    """Base class of every error raised on purpose by agent-session-store."""


class InvalidItemError(AgentSessionStoreError, ValueError):
    """An item cannot be stored as strict JSON (NaN, Infinity, unserialisable values, ...)."""


class ItemTooLargeError(InvalidItemError):
    """An item is larger than the database server accepts in one statement."""


class InvalidIdentifierError(AgentSessionStoreError, ValueError):
    """A table name is not a plain SQL identifier."""


class CommitOutcomeUnknownError(AgentSessionStoreError, RuntimeError):
    """The connection was lost while committing: the write may or may not have been saved.

    ``pop_item`` and ``clear_session`` are never run again after such a loss, because running
    them again could pop a second item: read the session to find out, then decide.
    ``add_items`` settles it by itself (its idempotency key makes a second send safe) and
    raises this only when the database stayed unreachable; ``idempotency_key`` then holds
    the key to call ``add_items`` with again, which stores the batch at most once.
    """

    #: The key of the ``add_items`` batch in doubt (None for other writes).
    idempotency_key: str | None = None


class DatabaseConnectionError(AgentSessionStoreError, ConnectionError):
    """No connection to the database could be made (server down, unreachable, refused login).

    Nothing was sent, so the call can be repeated; the store reconnects by itself once the
    server is back.
    """


class SchemaOutOfDateError(AgentSessionStoreError, RuntimeError):
    """The database schema is behind (or ahead of) the revision this package needs."""


class DriverNotInstalledError(AgentSessionStoreError, ImportError):
    """The async driver named by a database URL is not installed."""


class MigrationError(AgentSessionStoreError, RuntimeError):
    """A migration cannot run: unknown table layout, data that would not fit, a held lock."""


class InvalidRecordError(AgentSessionStoreError, ValueError):
    """An import record is not shaped like the records ``export_sessions`` yields."""


class InvalidMetadataError(AgentSessionStoreError, ValueError):
    """A title, metadata patch or metadata filter is not one the store can keep or use."""


class SessionOwnershipError(AgentSessionStoreError, PermissionError):
    """A handle bound to one user touched a session that user does not own.

    Nothing was read or changed. The session belongs to another user, or to none (it was
    created through a handle without ``user_id``); use a handle of its owner, or one without
    ``user_id`` for administrative access.
    """


class StoreClosedError(AgentSessionStoreError, RuntimeError):
    """The store was closed (``await store.close()``): none of its operations run any more.

    Closing is final, for the store and every session made from it, so that a shutdown
    cannot leak connections or let a late write land unnoticed. Make a new store to use
    the database again.
    """


class WrongEventLoopError(AgentSessionStoreError, RuntimeError):
    """A host's engine, pooling connections made on one event loop, was used from another.

    asyncpg and aiomysql connections belong to the loop that opened them. Give the store an
    engine with ``poolclass=NullPool``, make one engine per event loop, or let the store make
    its engine from a URL (it then keeps one pool per loop).
    """


class InvalidSessionSettingsError(AgentSessionStoreError, TypeError):
    """``session_settings`` has a key or value that ``SessionSettings`` does not take."""


class UnsupportedDatabaseError(AgentSessionStoreError, ValueError):
    """A database URL names a database or a driver agent-session-store cannot run on."""


class InvalidArgumentError(AgentSessionStoreError, ValueError):
    """An argument has the right type but a value the call cannot take (an empty id, ...)."""


class ArgumentTypeError(AgentSessionStoreError, TypeError):
    """An argument has a type the call does not take (a session id that is not a ``str``, ...)."""


class SessionNotFoundError(InvalidArgumentError):
    """The operation needs a session that does not exist (``fork``'s source)."""


class SessionExistsError(InvalidArgumentError):
    """The operation would write into a session that exists (``fork``'s new id)."""
