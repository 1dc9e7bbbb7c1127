"""An application that already has an engine and a declarative base, embedding the store.

Run: python examples/embedding.py [--url URL]   (default: sqlite:///app.db; plain URLs such
as postgresql://app@db/app get their async driver added). Running it again continues the same
conversations.

- the store's models go on the application's own ``Base``, so ``Base.metadata`` (and the
  application's Alembic autogenerate) sees every table;
- one ``SessionStore`` for the whole application, built once at start-up on the app's engine;
- one ``store.session(...)`` per request, which is cheap: it holds no connection.
"""

from __future__ import annotations

import argparse
import asyncio

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agent_session_store import SessionStore, async_url


class Base(DeclarativeBase):
    """The application's declarative base."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Conversation(Base):
    """The application's own row per chat, pointing at our sessions table."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # No column type: it is copied from agent_sessions.session_id (with its collation on MySQL).
    session_id: Mapped[str] = mapped_column(
        ForeignKey("agent_sessions.session_id", ondelete="CASCADE")
    )


class App:
    """What a web framework would keep on its application object."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.db = async_sessionmaker(engine, expire_on_commit=False)
        # One store per application: it builds its SQL once and shares the app's pool.
        self.store = SessionStore(engine, base=Base)

    async def startup(self) -> None:
        async with self.engine.begin() as conn:
            # Production would run Alembic; our tables are in Base.metadata like the app's.
            await conn.run_sync(Base.metadata.create_all)
        async with self.db.begin() as db:
            for user in (User(id=1, name="Ada"), User(id=2, name="Grace")):
                await db.merge(user)  # a second run finds them there

    async def chat(self, user_id: int, text: str) -> list[str]:
        """One request: append the user's message and a reply, return the history's texts."""
        session_id = f"user-{user_id}"
        session = self.store.session(session_id, session_settings={"limit": 20})
        await session.add_items([{"role": "user", "content": text}])
        # An agent would run here: await Runner.run(agent, text, session=session)
        await session.add_items([{"role": "assistant", "content": f"echo: {text}"}])
        async with self.db.begin() as db:
            known = await db.scalar(
                select(Conversation.id).where(Conversation.session_id == session_id)
            )
            if known is None:
                db.add(Conversation(user_id=user_id, session_id=session_id))
        return [item["content"] for item in await session.get_items()]


async def main(url: str) -> None:
    engine = create_async_engine(async_url(url))
    app = App(engine)
    try:
        await app.startup()
        print("tables on the app's metadata:", sorted(Base.metadata.tables))
        # Two users' requests at once, as a server would handle them, then a second turn.
        for history in await asyncio.gather(app.chat(1, "hello"), app.chat(2, "hi")):
            print(history)
        print(await app.chat(1, "how are you?"))
        page = await app.store.list_sessions()
        print({info.session_id: info.item_count for info in page.sessions})
    finally:
        await engine.dispose()  # the app owns the engine; the store never disposes it


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="sqlite:///app.db")
    asyncio.run(main(parser.parse_args().url))
