"""``SQLAlchemySession``: the OpenAI Agents SDK's ``Session`` protocol over a :class:`SessionStore`.

The class satisfies the protocol structurally, so the SDK is never imported here (its
``SessionSettings`` is used when the application has imported the SDK). Its constructor
matches the SDK's own ``SQLAlchemySession`` so it can replace it line for line.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_session_store._json import check_limit, check_session_id
from agent_session_store.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidSessionSettingsError,
)
from agent_session_store.models import DEFAULT_MESSAGES_TABLE, DEFAULT_SESSIONS_TABLE
from agent_session_store.records import UNSET, SessionRecord
from agent_session_store.store import SessionStore, check_async_engine
from agent_session_store.usage import RunUsage


@dataclass
class SessionSettings:
    """Per-session settings, shaped like the SDK's ``SessionSettings``.

    Used when the caller passes a dict; an SDK ``SessionSettings`` instance is kept as it is.
    """

    limit: int | None = None

    def resolve(self, override: Any) -> SessionSettings:
        """A copy with the non-None values of ``override`` (settings object or dict) on top."""
        if override is None:
            return self
        values = override if isinstance(override, Mapping) else vars(override)
        limit = values.get("limit")
        return SessionSettings(limit=self.limit if limit is None else limit)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        return asdict(self)


def _settings_class() -> type[Any]:
    """The SDK's ``SessionSettings`` if the application has imported the SDK, else ours.

    The SDK's wrappers (``EncryptedSession``, ...) read ``session_settings`` from the session
    they wrap and accept only the SDK's own type. An application that uses them has imported
    the SDK already, so looking in ``sys.modules`` is enough, and we never import it ourselves.
    """
    sdk = sys.modules.get("agents.memory.session_settings")
    return SessionSettings if sdk is None else cast("type[Any]", sdk.SessionSettings)


_SETTING_NAMES = frozenset(field.name for field in fields(SessionSettings))


def _coerce_settings(value: Any) -> Any:
    if value is None:
        return _settings_class()()
    if isinstance(value, Mapping):
        unknown = sorted(str(key) for key in set(value) - _SETTING_NAMES)
        if unknown:
            # A typo ("limt") silently ignored would send the whole history to the model.
            raise InvalidSessionSettingsError(
                f"unknown session_settings key(s) {unknown}; SessionSettings takes "
                f"{sorted(_SETTING_NAMES)} (for example {{'limit': 50}})"
            )
        # Our rules first: the SDK's pydantic type would quietly turn True or "3" into a limit.
        check_limit(value.get("limit"))
        return _settings_class()(**value)
    if isinstance(value, SessionSettings):
        settings_class = _settings_class()
        return value if settings_class is SessionSettings else settings_class(limit=value.limit)
    if not hasattr(value, "limit"):
        raise ArgumentTypeError(
            "session_settings must be a SessionSettings, a dict or None, "
            f"not {type(value).__name__}"
        )
    return value


class SQLAlchemySession:
    """The conversation history of one session, stored through SQLAlchemy.

    Build it from a store (``store.session(id)``), from an engine like the SDK's class, or
    with :meth:`from_url`. Sessions on the same engine and table names share one store, so
    statements are built once per store, not once per session.

    Args:
        session_id: The conversation's id: a non-empty ``str`` of at most 255 characters.
        engine: An ``AsyncEngine``; the session uses the store shared for it.
        store: A :class:`SessionStore` to use instead of ``engine``.
        create_tables: Create the tables (if missing) before the first operation.
        sessions_table: Sessions table name, with ``engine``.
        messages_table: Messages table name, with ``engine``.
        session_settings: The SDK's ``SessionSettings``, a dict such as ``{"limit": 50}``,
            or None for ``SessionSettings()``. A dict key it does not take raises
            ``InvalidSessionSettingsError``.
        ensure_ascii: Store items as ASCII-only JSON (non-ASCII characters as JSON unicode
            escapes), the SDK's default; False stores UTF-8 text. Reads accept both.
        user_id: The owner this handle acts for: its first write creates the session owned
            by ``user_id``; every call on a session owned by someone else (or by no one)
            raises ``SessionOwnershipError`` and changes nothing. None: no owner check.
        ttl: Sliding time to live for this handle's writes (``timedelta`` or seconds),
            instead of the store's ``ttl``; None for none.
    """

    session_id: str
    session_settings: Any

    def __init__(
        self,
        session_id: str,
        *,
        engine: AsyncEngine | None = None,
        store: SessionStore | None = None,
        create_tables: bool = False,
        sessions_table: str = DEFAULT_SESSIONS_TABLE,
        messages_table: str = DEFAULT_MESSAGES_TABLE,
        session_settings: Any = None,
        ensure_ascii: bool = True,
        user_id: str | None = None,
        ttl: Any = UNSET,
    ) -> None:
        self.session_id = check_session_id(session_id)
        if store is None:
            if engine is None:
                raise ArgumentTypeError("SQLAlchemySession needs engine= or store=")
            check_async_engine(engine)
            store = SessionStore.shared(
                engine, sessions_table=sessions_table, messages_table=messages_table
            )
        elif engine is not None and engine is not store.engine:
            raise InvalidArgumentError(
                "engine= and store= name different engines; pass one of them"
            )
        self._store = store
        self.user_id = user_id
        self._scope = store.scope(user_id, ttl)
        self._create_tables = create_tables
        self.session_settings = _coerce_settings(session_settings)
        self._ensure_ascii = bool(ensure_ascii)

    @classmethod
    def from_url(
        cls,
        session_id: str,
        *,
        url: str | URL,
        engine_kwargs: Mapping[str, Any] | None = None,
        session_settings: Any = None,
        **kwargs: Any,
    ) -> SQLAlchemySession:
        """A session on a new engine for ``url``, like the SDK's ``from_url``.

        The engine belongs to the caller: dispose it with ``await session.engine.dispose()``.
        ``kwargs`` takes ``create_tables``, ``sessions_table``, ``messages_table`` and
        ``ensure_ascii``.
        """
        table_names = {
            key: kwargs.pop(key) for key in ("sessions_table", "messages_table") if key in kwargs
        }
        store = SessionStore(url, engine_kwargs=engine_kwargs, **table_names)
        return cls(session_id, store=store, session_settings=session_settings, **kwargs)

    @property
    def engine(self) -> AsyncEngine:
        """The async engine under this session."""
        return self._store.engine

    @property
    def store(self) -> SessionStore:
        """The :class:`SessionStore` this session writes through."""
        return self._store

    def __repr__(self) -> str:
        return f"<SQLAlchemySession session_id={self.session_id!r} store={self._store!r}>"

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """Return the history: all items in order, or the latest ``limit`` in chronological order.

        Args:
            limit: How many of the newest items to return. None uses
                ``session_settings.limit``, and returns everything when that is None too.
        """
        limit = check_limit(limit)
        if limit is None and self.session_settings is not None:
            limit = check_limit(self.session_settings.limit)
        if self._create_tables:
            await self._ensure_tables()
        return await self._store.get_items(self.session_id, limit, scope=self._scope)

    async def add_items(self, items: list[Any], *, idempotency_key: str | None = None) -> None:
        """Append ``items`` in one transaction, creating the session if needed.

        Args:
            items: The items, in order.
            idempotency_key: Names this batch (1 to 255 characters): a second call with the
                same key stores nothing and succeeds. Without one the call gets its own
                key, so a connection lost at the commit point is settled by the store.

        Raises:
            TypeError: ``items`` is not a list of dicts.
            InvalidItemError: an item cannot be encoded as strict JSON. Nothing is stored.
            CommitOutcomeUnknownError: the connection was lost while committing and the
                database stayed unreachable; retry with its ``idempotency_key``.
        """
        if self._create_tables:
            await self._ensure_tables()
        await self._store.add_items(
            self.session_id,
            items,
            ensure_ascii=self._ensure_ascii,
            scope=self._scope,
            idempotency_key=idempotency_key,
        )

    async def pop_item(self) -> Any | None:
        """Remove and return the newest item, or None if the session is empty."""
        if self._create_tables:
            await self._ensure_tables()
        return await self._store.pop_item(self.session_id, scope=self._scope)

    async def clear_session(self) -> None:
        """Delete every item of this session, and the session itself."""
        if self._create_tables:
            await self._ensure_tables()
        await self._store.clear_session(self.session_id, scope=self._scope)

    async def rewind(self, keep: int, *, return_items: bool = True) -> list[Any] | int:
        """Keep the first ``keep`` items and remove the rest, in one transaction.

        For "edit an earlier message and regenerate": ``rewind(keep=n)`` then ``add_items``.
        A concurrent ``add_items`` lands wholly before (and is removed) or wholly after (and
        stays); each item a concurrent ``pop_item`` takes is not also returned here.

        Returns:
            The removed items in order, or how many with ``return_items=False`` (which does
            not read them: for long tails).

        Raises:
            SessionOwnershipError: this handle's ``user_id`` does not own the session.
        """
        if self._create_tables:
            await self._ensure_tables()
        return await self._store.rewind(
            self.session_id, keep, return_items=return_items, scope=self._scope
        )

    async def replace_items(self, items: list[Any]) -> None:
        """Swap the whole history for ``items`` in one transaction.

        Readers see the old history or the new one, never a mix or nothing; an error or a
        cancellation at any point leaves the old one. For compaction and summaries.

        Raises:
            InvalidItemError: an item cannot be encoded as strict JSON; nothing changed.
            SessionOwnershipError: this handle's ``user_id`` does not own the session.
        """
        if self._create_tables:
            await self._ensure_tables()
        await self._store.replace_items(
            self.session_id, items, ensure_ascii=self._ensure_ascii, scope=self._scope
        )

    async def _atomic_replace_items(self, items: list[Any]) -> bool:
        """:meth:`replace_items`, under the name the SDK's compaction wrapper looks for.

        ``OpenAIResponsesCompactionSession`` looks this up on the type it wraps and, when
        found, replaces the history in one call instead of ``clear_session`` + ``add_items``.
        """
        await self.replace_items(list(items))
        return True

    async def record_usage(self, result_or_usage: Any, *, model: str | None = None) -> RunUsage:
        """Store one usage row for a run of this session (the ledger, see docs/usage.md).

        Args:
            result_or_usage: The SDK's ``RunResult``/``RunResultStreaming`` (its
                ``context_wrapper.usage``; a streamed run once its events are consumed), an
                ``agents.usage.Usage``, or a mapping with the same fields.
            model: The model's name; by default the one the run's requests name, else the
                agent's model when it is a name, else None.

        Raises:
            SessionOwnershipError: this handle's ``user_id`` does not own the session.
            ArgumentTypeError, InvalidArgumentError: bad usage values; nothing was written.
        """
        if self._create_tables:
            await self._ensure_tables()
        return await self._store.record_usage(
            self.session_id, result_or_usage, model=model, user_id=self.user_id
        )

    async def info(self) -> SessionRecord | None:
        """This session's record (owner, title, metadata, times, item count), or None.

        None when the session has no row yet or has expired.

        Raises:
            SessionOwnershipError: this handle's ``user_id`` does not own the session.
        """
        if self._create_tables:
            await self._ensure_tables()
        return await self._store.records.info(self.session_id, self.user_id)

    async def update(
        self,
        *,
        title: str | None = UNSET,
        metadata: dict[str, Any] | None = None,
        expires_at: Any = UNSET,
    ) -> None:
        """Set the title, patch the metadata (in the database), or set the expiry time.

        ``metadata`` replaces the value of each key it gives and removes keys given None;
        other keys stay, and concurrent patches of different keys are all kept. The session
        is created (owned by this handle's ``user_id``) if it has no row yet.

        Raises:
            SessionOwnershipError: this handle's ``user_id`` does not own the session.
            InvalidMetadataError: a bad title or metadata; nothing was changed.
        """
        if self._create_tables:
            await self._ensure_tables()
        await self._store.records.update(
            self.session_id,
            self.user_id,
            title=title,
            metadata=metadata,
            expires_at=expires_at,
            ttl=self._scope.ttl,
        )

    async def _ensure_tables(self) -> None:
        await self._store.create_tables()
        self._create_tables = False
