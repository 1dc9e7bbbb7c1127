"""The store's statements: built with Core once per store, compiled once for its engine.

A :class:`Statement` carries the Core statement (what the Core executor runs) and, when the
driver can run it unchanged, its compiled SQL with the order of its positional parameters
(what the driver executor runs): the same SQL either way. The engine's
``schema_translate_map`` is compiled into that SQL, so both executors write to and read from
the same schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, Table, bindparam, delete, insert, literal_column, select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

from agent_session_store import _dialect, _expiry, _internals
from agent_session_store._family import is_postgresql

#: Rows per fetch when a full read streams.
PAGE = 1_000
#: ``LIMIT 1`` written into the SQL: as a parameter, PostgreSQL cannot use a cached generic plan
#: for it (a generic LIMIT looks costlier) and plans the statement again at every execution.
_ONE = literal_column("1", Integer)


@dataclass(frozen=True, slots=True)
class Statement:
    """A Core statement and, where it needs no type processing, its SQL for the driver.

    ``sources`` gives, per positional parameter, the caller's parameter name or, for a value
    fixed in the statement (``LIMIT 1``), that value. ``modifies`` marks statements that change
    rows: on drivers where a lone statement commits by itself, sending one is the commit point.
    """

    core: Executable
    sql: str | None
    sources: tuple[tuple[str | None, Any], ...]
    modifies: bool = False

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The positional arguments for ``params``, in the compiled SQL's order."""
        return tuple(value if name is None else params[name] for name, value in self.sources)


def prepare(
    core: Executable,
    dialect: Dialect,
    *,
    modifies: bool = False,
    schema_map: Mapping[str | None, str | None] | None = None,
) -> Statement:
    """Compile ``core`` for ``dialect`` once; keep the SQL only if the driver can run it as is.

    ``schema_map`` (the engine's ``schema_translate_map``) is rendered into the SQL. A bind
    that SQLAlchemy would convert on the way (other than a list for an array of plain text),
    or SQL completed at execution time, leaves the statement to the Core executor.
    """
    assert isinstance(core, ClauseElement)
    compiled = core.compile(
        dialect=dialect,
        schema_translate_map=dict(schema_map) if schema_map else None,
        render_schema_translate=bool(schema_map),
    )
    assert isinstance(compiled, SQLCompiler)
    names = _internals.positional_bind_names(compiled)
    runnable = names is not None and compiled.positional and "POSTCOMPILE" not in compiled.string
    sources: list[tuple[str | None, Any]] = []
    for name in names or ():
        bind = compiled.binds[name]
        runnable = runnable and not _converted(bind.type, dialect)
        sources.append((name, None) if bind.required else (None, bind.effective_value))
    return Statement(core, compiled.string if runnable else None, tuple(sources), modifies)


def _converted(type_: Any, dialect: Dialect) -> bool:
    """True when SQLAlchemy would change a value of ``type_`` before the driver sees it."""
    if type_.bind_processor(dialect) is None:
        return False
    # An array of a type without processing only copies the list it is given.
    item = getattr(type_, "item_type", None)
    return item is None or _converted(item, dialect)


class Statements:
    """Every statement of the four operations, for one pair of tables on one engine."""

    def __init__(
        self,
        sessions: Table,
        messages: Table,
        dialect: Dialect,
        schema_map: Mapping[str | None, str | None] | None,
        keys: Table,
    ) -> None:
        s, m, k = sessions, messages, keys

        def prep(core: Any, *, modifies: bool = False) -> Statement:
            return prepare(core, dialect, modifies=modifies, schema_map=schema_map)

        sid = bindparam("sid", type_=s.c.session_id.type)
        lim = bindparam("lim", type_=Integer)
        # Every read says "not expired" in its own WHERE: an expired session reads as empty
        # through any handle, in the same statement (a primary-key probe of its row).
        live = _expiry.not_expired(s, sid)
        newest_first = select(m.c.id, m.c.message_data).where(m.c.session_id == sid, live)
        newest_first = newest_first.order_by(m.c.id.desc())
        select_all = (
            select(m.c.message_data).where(m.c.session_id == sid, live).order_by(m.c.id)
        )
        self.select_head = prep(select_all.limit(lim))
        self.stream_all = prep(select_all.execution_options(yield_per=PAGE))
        # The newest items' text only (an id column costs ~3 us a row to decode on aiomysql);
        # with ids when a read has to page back past undecodable rows.
        newest_text = select(m.c.message_data).where(m.c.session_id == sid, live)
        self.select_tail = prep(newest_text.order_by(m.c.id.desc()).limit(lim))
        self.select_tail_ids = prep(newest_first.limit(lim))
        self.select_tail_before = prep(
            newest_first.where(m.c.id < bindparam("before", type_=Integer)).limit(lim)
        )
        uid = bindparam("uid", type_=s.c.session_id.type)
        #: SQLite, MySQL/MariaDB: the session-row upsert, which tells an expired row (see
        #: ``_expiry``); PostgreSQL: None, the append does it all.
        self.touch: Statement | None = None
        #: PostgreSQL: the upsert and the insert in one statement; elsewhere None.
        self.append: Statement | None = None
        #: PostgreSQL: ``append`` that also records the batch's idempotency key ``key``.
        self.append_keyed: Statement | None = None
        if is_postgresql(dialect):
            append = _expiry.append_postgresql(s, m, sid, uid, owned=False, ttl=False)
            self.append = prep(append, modifies=True)
            keyed = _expiry.append_postgresql(s, m, sid, uid, owned=False, ttl=False, keys=k)
            self.append_keyed = prep(keyed, modifies=True)
        else:
            touch = _expiry.touch(dialect, s, sid, uid, owned=False, ttl=False)
            self.touch = prep(touch, modifies=True)
        #: What a write to an expired session sends first: the old life's row reset.
        self.reset = prep(_expiry.reset(s, sid, ttl=False), modifies=True)
        key = bindparam("key", type_=k.c.idempotency_key.type)
        #: Elsewhere the key is one more INSERT in the write's transaction.
        self.insert_key = prep(insert(k).values(session_id=sid, idempotency_key=key), modifies=True)
        self.key_stored = prep(
            select(k.c.session_id).where(k.c.session_id == sid, k.c.idempotency_key == key)
        )
        text_param = bindparam("text", type_=m.c.message_data.type)
        self.insert = prep(
            insert(m).values(session_id=sid, message_data=text_param), modifies=True
        )
        self.max_packet = prep(_dialect.MAX_PACKET)
        self.exists = prep(select(m.c.id).where(m.c.session_id == sid, live).limit(_ONE))
        self.delete_messages = prep(delete(m).where(m.c.session_id == sid), modifies=True)
        self.delete_session = prep(delete(s).where(s.c.session_id == sid), modifies=True)
        #: MySQL/MariaDB refuse a DELETE whose subquery reads the same table: lock, then delete.
        self.pop_returns = not _dialect.is_mysql(dialect)
        newest_id = (
            select(m.c.id).where(m.c.session_id == sid, live).order_by(m.c.id.desc()).limit(_ONE)
        )
        self.pop = prep(
            delete(m).where(m.c.id == newest_id.scalar_subquery()).returning(m.c.message_data),
            modifies=True,
        )
        self.select_newest_locked = prep(newest_first.limit(_ONE).with_for_update())
        self.delete_by_id = prep(
            delete(m).where(m.c.id == bindparam("row_id", type_=Integer)), modifies=True
        )
        self.checks_packets = _dialect.is_mysql(dialect)

    def hot(self) -> list[Statement]:
        """The statements this dialect's operations send (all must run on the driver)."""
        hot = [self.select_head, self.stream_all, self.select_tail, self.select_tail_ids]
        hot.append(self.exists)
        hot += [self.select_tail_before, self.delete_messages, self.delete_session]
        hot.append(self.key_stored)
        if self.append is not None and self.append_keyed is not None:
            hot += [self.append, self.append_keyed]
        else:
            hot += [self.insert, self.insert_key]
        hot += [self.touch] if self.touch is not None else []
        hot += [self.pop] if self.pop_returns else [self.select_newest_locked, self.delete_by_id]
        if self.checks_packets:
            hot.append(self.max_packet)
        return hot

    def all_runnable_on_driver(self) -> bool:
        """True when every hot statement compiled to SQL the driver can run unchanged."""
        return all(stmt.sql is not None for stmt in self.hot())
