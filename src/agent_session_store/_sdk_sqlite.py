"""Read-only access to a file written by the SDK's ``SQLiteSession``, for ``import-sdk-sqlite``.

The file is opened with SQLite's ``mode=ro`` and without the store's connection settings
(WAL, foreign keys), which would write to it: copying history out never changes the source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Table, func, inspect, select
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store.admin import StoreAdmin
from agent_session_store.models import make_models


class SQLiteSource(StoreAdmin):
    """The store-level reads (``export_sessions`` and friends) over a read-only SQLite file."""

    def __init__(self, engine: AsyncEngine, sessions_table: str, messages_table: str) -> None:
        models = make_models(sessions_table=sessions_table, messages_table=messages_table)
        self._engine = engine
        self._sessions: Table = models.AgentSession.__table__  # type: ignore[attr-defined]
        self._messages: Table = models.AgentMessage.__table__  # type: ignore[attr-defined]
        super().__init__(
            self._sessions,
            self._messages,
            dialect_name="sqlite",
            connect=engine.connect,
            begin=engine.begin,
        )

    @property
    def engine(self) -> AsyncEngine:
        """The read-only engine on the file."""
        return self._engine

    async def has_tables(self) -> bool:
        """True when the file holds both tables."""
        async with self._engine.connect() as conn:
            return bool(await conn.run_sync(_has_both, self._sessions.name, self._messages.name))

    async def item_count(self) -> int:
        """How many items the file holds."""
        async with self._engine.connect() as conn:
            stmt = select(func.count()).select_from(self._messages)
            return int((await conn.execute(stmt)).scalar_one())


def _has_both(conn: Connection, sessions: str, messages: str) -> bool:
    inspector = inspect(conn)
    return inspector.has_table(sessions) and inspector.has_table(messages)


@asynccontextmanager
async def open_sdk_file(
    path: Path, sessions_table: str, messages_table: str
) -> AsyncIterator[SQLiteSource]:
    """A :class:`SQLiteSource` on ``path``, its engine disposed afterwards."""
    # A URI filename, so mode=ro applies; quoted, so '?' or '#' in the path stay in the path.
    url = URL.create(
        "sqlite+aiosqlite", database=f"file:{quote(str(path))}?mode=ro", query={"uri": "true"}
    )
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        yield SQLiteSource(engine, sessions_table, messages_table)
    finally:
        await engine.dispose()
