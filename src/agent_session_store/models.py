"""Declarative models, column types and naming rules for the two tables.

The default pair, :class:`AgentSession` and :class:`AgentMessage`, lives on this package's
:class:`Base`. :func:`make_models` builds (once, then caches) a pair with other table names,
or on a host application's declarative base so that the host's metadata, relationships and
Alembic autogenerate see our tables. Every foreign key, index and constraint name is derived
from the configured table names.
"""

from __future__ import annotations

import hashlib
import re
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeEngine

from agent_session_store.errors import InvalidArgumentError, InvalidIdentifierError

DEFAULT_SESSIONS_TABLE = "agent_sessions"
DEFAULT_MESSAGES_TABLE = "agent_messages"

#: Deterministic constraint names on every dialect; Alembic needs them for downgrades.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MAX_NAME = 63  # PostgreSQL truncates identifiers at 63 bytes; MySQL allows 64.


def check_identifier(name: object, what: str = "table name") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ``InvalidIdentifierError``."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidIdentifierError(
            f"{what} {name!r} is not a valid identifier: use letters, digits and underscores, "
            "start with a letter or underscore, at most 63 characters"
        )
    return name


def derived_name(*parts: str) -> str:
    """Join ``parts`` into an identifier, shortened with a stable hash when over 63 chars."""
    name = "_".join(parts)
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: _MAX_NAME - 9]}_{digest}"


def messages_index_name(messages_table: str) -> str:
    """Name of the (session_id, id) index: the one the SDK's SQLiteSession creates."""
    return derived_name("idx", messages_table, "session_id")


def keys_table_name(messages_table: str) -> str:
    """Name of the idempotency keys table (revision 0005): ``<messages_table>_keys``."""
    return derived_name(messages_table, "keys")


def keys_index_name(keys_table: str) -> str:
    """Name of the keys table's ``created_at`` index, which :func:`purge_keys` scans."""
    return derived_name("ix", keys_table, "created")


#: The sessions table's indexes (revision 0002): suffix of the name, then the columns. Listing
#: pages on ``(updated_at, session_id)``, globally or for one user; expiry scans ``expires_at``.
SESSION_INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("updated", ("updated_at", "session_id")),
    ("user_updated", ("user_id", "updated_at", "session_id")),
    ("expires", ("expires_at",)),
)


def session_index_name(sessions_table: str, suffix: str) -> str:
    """Name of one of the sessions table's indexes, derived from the table's name."""
    return derived_name("ix", sessions_table, suffix)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every dialect.

    PostgreSQL stores ``TIMESTAMP WITH TIME ZONE``; MySQL/MariaDB ``DATETIME(6)`` and SQLite
    text hold UTC wall time. Values read back are aware UTC datetimes everywhere, including
    naive values written by other tools, which are taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """``DATETIME(6)`` on MySQL/MariaDB, a timezone-aware ``DateTime`` elsewhere."""
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC (naive UTC where the column has no zone)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise InvalidArgumentError("naive datetime given; pass a timezone-aware datetime")
        value = value.astimezone(timezone.utc)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class utcnow(FunctionElement[datetime]):  # noqa: N801 - reads as a SQL function
    """The current UTC time, in the column's storage format, on every dialect."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(utcnow)
def _utcnow_default(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utcnow, "postgresql")
def _utcnow_postgresql(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "now()"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    # Six fractional digits, like the values SQLAlchemy binds, so text comparison orders them.
    return "(strftime('%Y-%m-%d %H:%M:%f000', 'now'))"


@compiles(utcnow, "mysql")
@compiles(utcnow, "mariadb")
def _utcnow_mysql(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "(UTC_TIMESTAMP(6))"


#: ``VARCHAR(255)``; binary collation on MySQL/MariaDB so ids compare case-sensitively there too.
SessionId = String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
#: JSON text; ``LONGTEXT`` on MySQL/MariaDB so multi-megabyte items fit.
MessageText = Text().with_variant(mysql.LONGTEXT(charset="utf8mb4"), "mysql", "mariadb")
#: ``BIGINT`` where the dialect has it; SQLite needs ``INTEGER`` for its rowid alias.
MessageId = BigInteger().with_variant(Integer(), "sqlite")
#: The owner's id: ``VARCHAR(255)``, compared case-sensitively like session ids.
UserId = SessionId
#: An ``add_items`` idempotency key: up to 255 characters, compared case-sensitively.
IdempotencyKey = SessionId
#: A session's title; ``TEXT`` everywhere (``utf8mb4`` on MySQL/MariaDB).
TitleText = Text().with_variant(mysql.TEXT(charset="utf8mb4"), "mysql", "mariadb")
#: Session metadata: ``JSONB`` on PostgreSQL (containment, ``||``), ``JSON`` elsewhere.
MetadataJSON = JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)

_TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB", "mariadb_engine": "InnoDB"}


class Base(DeclarativeBase):
    """This package's declarative base, used when the host application passes none."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AgentSessionColumns:
    """Columns of the sessions table; mixed into every generated session model."""

    session_id: Mapped[str] = mapped_column(SessionId, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, server_default=utcnow()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, server_default=utcnow()
    )
    user_id: Mapped[str | None] = mapped_column(UserId, nullable=True)
    title: Mapped[str | None] = mapped_column(TitleText, nullable=True)
    # ``metadata`` is taken by the declarative base: the column keeps its name, not the attribute.
    session_metadata: Mapped[dict[str, Any] | None] = mapped_column(
        "metadata", MetadataJSON, nullable=True
    )
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: Set by ``store.fork``: the session this one was copied from (revision 0003); no foreign
    #: key, so deleting the source keeps the fork and its reference.
    forked_from_session_id: Mapped[str | None] = mapped_column(SessionId, nullable=True)
    #: The id of the source's last item the fork copied (None when it copied none).
    forked_from_item_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    if TYPE_CHECKING:
        messages: Mapped[list[Any]]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} session_id={self.session_id!r}>"


class AgentMessageColumns:
    """Columns of the messages table except the foreign key, which needs the sessions name."""

    id: Mapped[int] = mapped_column(
        MessageId, primary_key=True, autoincrement=True, sort_order=-1
    )
    message_data: Mapped[str] = mapped_column(MessageText, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, server_default=utcnow()
    )

    if TYPE_CHECKING:
        session_id: Mapped[str]
        session: Mapped[Any]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r} session_id={self.session_id!r}>"


class ArchivedItemColumns:
    """Columns of the archive table (revision 0003): items an ``archive=`` store removed.

    Items that pop, clear, rewind and replace took out, kept for ``restore``.

    No foreign key: an archived item outlives its session's row (``clear_session`` deletes
    it). ``user_id`` is the owner when it was archived, so ``erase_user`` finds it.
    """

    id: Mapped[int] = mapped_column(
        MessageId, primary_key=True, autoincrement=True, sort_order=-1
    )
    session_id: Mapped[str] = mapped_column(SessionId, nullable=False)
    user_id: Mapped[str | None] = mapped_column(UserId, nullable=True)
    #: The item's id in the messages table; a restore puts it back under this id.
    item_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    message_data: Mapped[str] = mapped_column(MessageText, nullable=False)
    #: When the item was first written.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    archived_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, server_default=utcnow()
    )
    #: One archiving operation (its items share it): what ``restore`` undoes as a whole.
    batch: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: ``pop``, ``clear``, ``rewind``, ``replace`` or ``restore``.
    reason: Mapped[str] = mapped_column(String(16), nullable=False)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r} session_id={self.session_id!r}>"


def archive_table_name(messages_table: str) -> str:
    """Name of the archive table of ``messages_table``."""
    return derived_name(messages_table, "archive")


#: The archive table's indexes: suffix of the name, then the columns. ``restore`` walks a
#: session's batches newest first; ``erase_user`` and ``purge_archive`` filter by owner, age.
ARCHIVE_INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("session", ("session_id", "id")),
    ("user", ("user_id",)),
    ("archived", ("archived_at",)),
)


class AgentKeyColumns:
    """Columns of the idempotency keys table: one row per ``add_items`` batch written.

    The primary key ``(session_id, idempotency_key)`` is what refuses a second copy of a
    batch; ``created_at`` is what old keys are purged by.
    """

    idempotency_key: Mapped[str] = mapped_column(IdempotencyKey, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, server_default=utcnow()
    )

    if TYPE_CHECKING:
        session_id: Mapped[str]

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} session_id={self.session_id!r} "
            f"idempotency_key={self.idempotency_key!r}>"
        )


class ModelPair(NamedTuple):
    """The two declarative classes of one configured pair of tables.

    The archive's model is :attr:`AgentArchivedItem` and the batches' idempotency keys' model
    :attr:`AgentKey` (properties, kept out of the tuple so that
    ``AgentSession, AgentMessage = make_models()`` unpacks).
    """

    AgentSession: type[AgentSessionColumns]
    AgentMessage: type[AgentMessageColumns]

    @property
    def AgentArchivedItem(self) -> type[ArchivedItemColumns]:  # noqa: N802 - a class
        """The archive table's model, on the same base as the pair."""
        return _archives[self.AgentMessage]

    @property
    def AgentKey(self) -> type[AgentKeyColumns]:  # noqa: N802 - a class, named like one
        """The idempotency keys model of this pair (table ``<messages_table>_keys``)."""
        return _key_models[self.AgentMessage]


_cache: dict[tuple[type[Any], str, str], ModelPair] = {}
_archives: dict[type[Any], type[ArchivedItemColumns]] = {}
_key_models: dict[type[Any], type[AgentKeyColumns]] = {}
_cache_lock = threading.Lock()


def make_models(
    base: type[Any] | None = None,
    *,
    sessions_table: str = DEFAULT_SESSIONS_TABLE,
    messages_table: str = DEFAULT_MESSAGES_TABLE,
) -> ModelPair:
    """Return the declarative model pair for these table names on ``base``.

    Calls with the same arguments return the same classes. With ``base=None`` the default names
    give this package's :class:`AgentSession`/:class:`AgentMessage`, and other names a pair on
    a private base of their own, so that ``metadata`` holds exactly their three tables (the
    third, ``<messages_table>_keys``, holds the batches' idempotency keys: ``pair.AgentKey``).

    Args:
        base: A host application's declarative base (``DeclarativeBase`` subclass or
            ``declarative_base()`` result), or None.
        sessions_table: Name of the sessions table.
        messages_table: Name of the messages table.

    Raises:
        InvalidIdentifierError: a table name is not a plain SQL identifier, or both are equal.
    """
    check_identifier(sessions_table, "sessions_table")
    check_identifier(messages_table, "messages_table")
    if sessions_table == messages_table:
        raise InvalidIdentifierError("sessions_table and messages_table must differ")
    default_names = (sessions_table, messages_table) == (
        DEFAULT_SESSIONS_TABLE,
        DEFAULT_MESSAGES_TABLE,
    )
    with _cache_lock:
        key_base: type[Any] = base if base is not None else Base
        key = (key_base, sessions_table, messages_table)
        pair = _cache.get(key)
        if pair is None:
            if base is None and not default_names:
                key_base = _private_base()
            suffix = "" if default_names else f"_{sessions_table}_{messages_table}"
            pair = _build(key_base, sessions_table, messages_table, suffix)
            _cache[key] = pair
        return pair


def _private_base() -> type[Any]:
    class PrivateBase(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    return PrivateBase


def _build(base: type[Any], sessions_table: str, messages_table: str, suffix: str) -> ModelPair:
    session_cls = cast(
        "type[AgentSessionColumns]",
        type(
            f"AgentSession{suffix}",
            (AgentSessionColumns, base),
            {
                "__module__": __name__,
                "__tablename__": sessions_table,
                "__table_args__": (
                    *(
                        Index(session_index_name(sessions_table, suffix), *columns)
                        for suffix, columns in SESSION_INDEXES
                    ),
                    dict(_TABLE_OPTIONS),
                ),
            },
        ),
    )
    message_cls = cast(
        "type[AgentMessageColumns]",
        type(
            f"AgentMessage{suffix}",
            (AgentMessageColumns, base),
            {
                "__module__": __name__,
                "__tablename__": messages_table,
                "__table_args__": (
                    Index(messages_index_name(messages_table), "session_id", "id"),
                    {"sqlite_autoincrement": True, **_TABLE_OPTIONS},
                ),
                "session_id": mapped_column(
                    SessionId,
                    ForeignKey(f"{sessions_table}.session_id", ondelete="CASCADE"),
                    nullable=False,
                ),
            },
        ),
    )
    # Assigned after both classes exist: a class object, never a name that another pair of
    # tables in the same registry could also answer to.
    messages = relationship(
        message_cls,
        back_populates="session",
        order_by=message_cls.id,
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    setattr(session_cls, "messages", messages)  # noqa: B010 - declared for typing only
    setattr(message_cls, "session", relationship(session_cls, back_populates="messages"))  # noqa: B010
    archive = archive_table_name(messages_table)
    _archives[message_cls] = cast(
        "type[ArchivedItemColumns]",
        type(
            f"AgentArchivedItem{suffix}",
            (ArchivedItemColumns, base),
            {
                "__module__": __name__,
                "__tablename__": archive,
                "__table_args__": (
                    *(
                        Index(derived_name("ix", archive, name), *columns)
                        for name, columns in ARCHIVE_INDEXES
                    ),
                    {"sqlite_autoincrement": True, **_TABLE_OPTIONS},
                ),
            },
        ),
    )
    keys_table = keys_table_name(messages_table)
    _key_models[message_cls] = cast(
        "type[AgentKeyColumns]",
        type(
            f"AgentKey{suffix}",
            (AgentKeyColumns, base),
            {
                "__module__": __name__,
                "__tablename__": keys_table,
                "__table_args__": (
                    PrimaryKeyConstraint("session_id", "idempotency_key"),
                    Index(keys_index_name(keys_table), "created_at"),
                    dict(_TABLE_OPTIONS),
                ),
                "session_id": mapped_column(
                    SessionId,
                    ForeignKey(f"{sessions_table}.session_id", ondelete="CASCADE"),
                    nullable=False,
                    sort_order=-1,
                ),
            },
        ),
    )
    return ModelPair(session_cls, message_cls)


AgentSession, AgentMessage = make_models()
