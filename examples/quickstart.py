"""Quickstart: a three-turn agent conversation stored by agent-session-store, then read back.

Runs offline: the agent's model is scripted, so no API key or network is needed.

    python examples/quickstart.py [--url URL] [--session ID]

The URL defaults to ``AGENT_SESSION_STORE_URL``, else the embedded SQLite file
``sqlite+aiosqlite:///agent_sessions.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from agents import Runner, set_tracing_disabled

from agent_session_store import SessionStore
from agent_session_store.scripted import demo_agent

DEFAULT_URL = "sqlite+aiosqlite:///agent_sessions.db"
QUESTIONS = ["Hi!", "What's the weather in Paris?", "Thanks. What did I ask about?"]


async def main(url: str, session_id: str) -> None:
    set_tracing_disabled(True)
    agent, _model = demo_agent()
    async with SessionStore(url) as store:
        await store.create_tables()
        session = store.session(session_id)
        await session.clear_session()  # each run starts the conversation afresh
        for question in QUESTIONS:
            result = await Runner.run(agent, question, session=session)
            print(f"user> {question}\nassistant> {result.final_output}\n")

        items = await store.session(session_id).get_items()
        print(f"{len(items)} items stored in session {session_id!r} at {store!r}:")
        for number, item in enumerate(items, 1):
            kind = item.get("type") or item.get("role")
            print(f"  {number:2}. {kind:<20} {json.dumps(item, ensure_ascii=False)[:90]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("AGENT_SESSION_STORE_URL", DEFAULT_URL))
    parser.add_argument("--session", default="quickstart")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.session))
