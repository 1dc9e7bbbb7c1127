"""A FastAPI application keeping each user's agent conversation on its own engine and base.

Run: DATABASE_URL=postgresql://app@db/app uvicorn fastapi_app:app   (from examples/; the
default is sqlite:///fastapi_app.db). Needs fastapi and an ASGI server (pip install fastapi
uvicorn). tests/test_fastapi_example.py drives it through httpx.

- Our models go on the app's ``Base`` when this module is imported, so the app's Alembic
  autogenerate sees them next to ``Conversation`` (and the foreign key between them resolves).
- The engine and the one ``SessionStore`` live on the lifespan; a dependency hands each
  request its ``store.session(...)``, which holds no connection until it is used.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel
from sqlalchemy import ForeignKey
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agent_session_store import SessionStore, SQLAlchemySession, async_url, make_models


class Base(DeclarativeBase):
    """The application's declarative base."""


# At import time, not in the lifespan: Alembic's env.py imports this module and reads
# Base.metadata without ever starting the app.
make_models(Base)


class Conversation(Base):
    """The application's own row per chat, pointing at our sessions table."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("agent_sessions.session_id", ondelete="CASCADE"), unique=True
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # async_url accepts what PaaS hosts put in DATABASE_URL (postgres://...) and adds the
    # async driver, as SessionStore does for URLs it is given.
    url = async_url(os.environ.get("DATABASE_URL", "sqlite:///fastapi_app.db"))
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        # Production runs Alembic instead (docs/migrations.md); create_all is idempotent.
        await conn.run_sync(Base.metadata.create_all)
    app.state.store = SessionStore(engine, base=Base)  # once per application
    try:
        yield
    finally:
        await engine.dispose()  # the app owns the engine; the store never disposes it


app = FastAPI(lifespan=lifespan)


async def chat_session(user_id: int, request: Request) -> SQLAlchemySession:
    """The conversation of ``user_id``: one Agents SDK ``Session`` per request."""
    store: SessionStore = request.app.state.store
    return store.session(f"user-{user_id}")


ChatSession = Annotated[SQLAlchemySession, Depends(chat_session)]


class ChatIn(BaseModel):
    text: str


class ChatOut(BaseModel):
    reply: str
    items: int


@app.post("/users/{user_id}/chat")
async def chat(body: ChatIn, session: ChatSession) -> ChatOut:
    """Append the user's message and the agent's reply to the user's history."""
    # With the SDK (pip install "agent-session-store[agents]"):
    #     result = await Runner.run(agent, body.text, session=session)
    #     reply = result.final_output
    reply = f"echo: {body.text}"
    await session.add_items([
        {"role": "user", "content": body.text},
        {"role": "assistant", "content": reply},
    ])
    return ChatOut(reply=reply, items=len(await session.get_items()))


@app.get("/users/{user_id}/history")
async def history(session: ChatSession) -> list[dict[str, Any]]:
    """The user's history, oldest first."""
    return await session.get_items()
