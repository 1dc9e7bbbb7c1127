"""Declarative models: runtime table names, host bases, ORM use, types on every dialect."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import ForeignKey, MetaData, String, event, func, inspect, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

from agent_session_store import (
    AgentMessage,
    AgentSession,
    Base,
    InvalidIdentifierError,
    SessionStore,
    make_models,
)
from agent_session_store.models import SessionId, derived_name, messages_index_name

from .conftest import dialect_of


def test_default_models_use_the_sdk_table_and_column_names() -> None:
    assert AgentSession.__tablename__ == "agent_sessions"  # type: ignore[attr-defined]
    assert AgentMessage.__tablename__ == "agent_messages"  # type: ignore[attr-defined]
    sessions = AgentSession.__table__  # type: ignore[attr-defined]
    messages = AgentMessage.__table__  # type: ignore[attr-defined]
    assert list(sessions.c.keys()) == [
        "session_id", "created_at", "updated_at", "user_id", "title", "metadata", "expires_at",
        "forked_from_session_id", "forked_from_item_id",
    ]
    assert AgentSession.session_metadata.property.columns[0].name == "metadata"
    assert {ix.name for ix in sessions.indexes} == {
        "ix_agent_sessions_updated", "ix_agent_sessions_user_updated", "ix_agent_sessions_expires"
    }
    assert list(messages.c.keys()) == ["id", "session_id", "message_data", "created_at"]
    assert {ix.name for ix in messages.indexes} == {"idx_agent_messages_session_id"}
    (fk,) = messages.foreign_keys
    assert fk.target_fullname == "agent_sessions.session_id" and fk.ondelete == "CASCADE"


def test_make_models_returns_the_same_classes_for_the_same_names() -> None:
    assert make_models() == (AgentSession, AgentMessage)
    pair = make_models(sessions_table="chat_sessions", messages_table="chat_items")
    assert make_models(sessions_table="chat_sessions", messages_table="chat_items") is pair


def test_custom_names_derive_foreign_key_index_and_constraint_names() -> None:
    pair = make_models(sessions_table="tenant_a_sessions", messages_table="tenant_a_items")
    messages = pair.AgentMessage.__table__  # type: ignore[attr-defined]
    (fk,) = messages.foreign_keys
    assert fk.target_fullname == "tenant_a_sessions.session_id"
    assert fk.constraint.name == "fk_tenant_a_items_session_id_tenant_a_sessions"
    assert {ix.name for ix in messages.indexes} == {"idx_tenant_a_items_session_id"}
    assert messages.primary_key.name == "pk_tenant_a_items"
    # Custom names live on a private base: its metadata holds exactly this store's tables.
    assert set(messages.metadata.tables) == {
        "tenant_a_sessions", "tenant_a_items", "tenant_a_items_archive", "tenant_a_items_keys"
    }
    archive = pair.AgentArchivedItem.__table__  # type: ignore[attr-defined]
    assert archive.name == "tenant_a_items_archive" and not archive.foreign_keys
    assert archive.primary_key.name == "pk_tenant_a_items_archive"
    assert {ix.name for ix in archive.indexes} == {
        "ix_tenant_a_items_archive_session",
        "ix_tenant_a_items_archive_user",
        "ix_tenant_a_items_archive_archived",
    }
    keys = pair.AgentKey.__table__  # type: ignore[attr-defined]
    (key_fk,) = keys.foreign_keys
    assert key_fk.constraint.name == "fk_tenant_a_items_keys_session_id_tenant_a_sessions"
    assert key_fk.ondelete == "CASCADE"
    assert [c.name for c in keys.primary_key.columns] == ["session_id", "idempotency_key"]
    assert keys.primary_key.name == "pk_tenant_a_items_keys"
    assert {ix.name for ix in keys.indexes} == {"ix_tenant_a_items_keys_created"}


def test_derived_names_stay_within_63_characters_and_distinct() -> None:
    long_a, long_b = "m" * 62 + "a", "m" * 62 + "b"
    assert len(messages_index_name(long_a)) <= 63
    assert messages_index_name(long_a) != messages_index_name(long_b)
    assert derived_name("idx", "short") == "idx_short"


@pytest.mark.parametrize(
    "name",
    ["x; DROP TABLE y", "", "a" * 64, '"quoted"', "1starts_with_digit", "has space", "dash-ed",
     None, 42],
)
def test_table_names_that_are_not_identifiers_raise_value_error(name: Any) -> None:
    with pytest.raises(InvalidIdentifierError) as info:
        SessionStore("sqlite+aiosqlite://", sessions_table=name)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="messages_table"):
        make_models(messages_table=name)


def test_equal_table_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="must differ"):
        make_models(sessions_table="same", messages_table="same")


async def test_two_stores_with_different_table_names_share_one_database(db_url: str) -> None:
    async with SessionStore(db_url) as default, SessionStore(
        default.engine, sessions_table="b_sessions", messages_table="b_messages"
    ) as other:
        await default.create_tables()
        await other.create_tables()
        await default.session("same-id").add_items([{"store": "default"}])
        await other.session("same-id").add_items([{"store": "b"}])
        assert await default.session("same-id").get_items() == [{"store": "default"}]
        assert await other.session("same-id").get_items() == [{"store": "b"}]
        async with default.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {"agent_sessions", "agent_messages", "b_sessions", "b_messages"} <= names


async def test_create_tables_is_idempotent_and_safe_when_many_tasks_call_it(db_url: str) -> None:
    import asyncio

    async with SessionStore(db_url) as store:
        await asyncio.gather(*(store.create_tables() for _ in range(10)))
        await store.create_tables()
    # A second store (fresh flag) on the same database finds the tables already there.
    async with SessionStore(db_url) as again:
        await again.create_tables()
        await again.session("s").add_items([{"ok": 1}])
        assert await again.session("s").get_items() == [{"ok": 1}]


class HostBase(DeclarativeBase):
    metadata = MetaData()


class User(HostBase):
    __tablename__ = "host_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    # The same column type as ours, so MySQL/MariaDB accept the foreign key's collation.
    session_id: Mapped[str | None] = mapped_column(
        SessionId, ForeignKey("host_agent_sessions.session_id")
    )


HOST_MODELS = make_models(
    HostBase, sessions_table="host_agent_sessions", messages_table="host_agent_messages"
)
User.agent_session = relationship(HOST_MODELS.AgentSession)  # type: ignore[attr-defined]


def test_models_on_a_host_base_join_the_host_metadata() -> None:
    assert {
        "host_users", "host_agent_sessions", "host_agent_messages", "host_agent_messages_keys"
    } <= set(HostBase.metadata.tables)
    assert issubclass(HOST_MODELS.AgentSession, HostBase)
    assert issubclass(HOST_MODELS.AgentKey, HostBase)
    assert "host_agent_sessions" not in Base.metadata.tables


async def test_orm_queries_and_relationships_through_models_on_a_host_base(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(HostBase.metadata.create_all)
    store = SessionStore(
        engine, base=HostBase, sessions_table="host_agent_sessions",
        messages_table="host_agent_messages",
    )
    assert store.AgentSession is HOST_MODELS.AgentSession
    await store.session("conv-1").add_items([{"n": 1}, {"n": 2}])
    await store.session("conv-2").add_items([{"n": 3}])

    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as orm, orm.begin():
        orm.add(User(id=1, name="ada", session_id="conv-1"))
    async with maker() as orm:
        user = (
            await orm.execute(
                select(User).options(
                    selectinload(User.agent_session).selectinload(  # type: ignore[attr-defined]
                        HOST_MODELS.AgentSession.messages
                    )
                )
            )
        ).scalar_one()
        messages = user.agent_session.messages
        assert [m.message_data for m in messages] == ['{"n":1}', '{"n":2}']
        counts = (
            await orm.execute(
                select(HOST_MODELS.AgentMessage.session_id, func.count())
                .group_by(HOST_MODELS.AgentMessage.session_id)
                .order_by(HOST_MODELS.AgentMessage.session_id)
            )
        ).all()
        assert [tuple(c) for c in counts] == [("conv-1", 2), ("conv-2", 1)]


async def test_orm_delete_of_a_session_cascades_to_its_messages(store: SessionStore) -> None:
    await store.session("gone").add_items([{"n": 1}, {"n": 2}])
    await store.session("kept").add_items([{"n": 3}])
    async with AsyncSession(store.engine) as orm, orm.begin():
        await orm.delete(await orm.get(store.AgentSession, "gone"))
    assert await store.session("gone").get_items() == []
    assert await store.session("kept").get_items() == [{"n": 3}]


@pytest.mark.parametrize("zone", ["+05:00", "-08:00"])
async def test_timestamps_are_aware_utc_whatever_the_connection_time_zone(
    db_url: str, zone: str
) -> None:
    dialect = dialect_of(db_url)
    engine = create_async_engine(db_url)

    @event.listens_for(engine.sync_engine, "connect")
    def set_zone(dbapi_connection: Any, _record: Any) -> None:
        # Every connection of the store writes and reads in a non-UTC time zone.
        statement = {
            "mariadb": f"SET time_zone = '{zone}'",
            "postgresql": f"SET TIME ZONE '{zone}'",
        }
        if dialect in statement:
            cursor = dbapi_connection.cursor()
            cursor.execute(statement[dialect])
            cursor.close()

    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    try:
        store = SessionStore(engine)
        await store.create_tables()
        await store.add_items("ts", [{"n": 1}])
        async with engine.connect() as conn:
            session_row = (await conn.execute(select(store.sessions))).one()
            message_row = (await conn.execute(select(store.messages))).one()
    finally:
        await engine.dispose()
    after = datetime.now(timezone.utc) + timedelta(seconds=5)
    for value in (session_row.created_at, session_row.updated_at, message_row.created_at):
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
        assert before <= value <= after


async def test_message_ids_are_bigint_where_the_dialect_has_it(store: SessionStore) -> None:
    async with store.engine.connect() as conn:
        columns = await conn.run_sync(
            lambda c: {col["name"]: col for col in inspect(c).get_columns("agent_messages")}
        )
    type_name = str(columns["id"]["type"]).upper()
    if dialect_of(str(store.engine.url)) == "sqlite":
        assert type_name == "INTEGER"
    else:
        assert type_name == "BIGINT"
