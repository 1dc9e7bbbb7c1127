"""The SDK's ``OpenAIResponsesCompactionSession`` over our session replaces in one transaction.

The wrapper looks up ``_atomic_replace_items`` on the type it wraps; ours is
``replace_items``, so compaction never goes through ``clear_session`` + ``add_items`` (where a
crash in between loses the conversation). The client is scripted: ``responses.compact``
returns a fixed summary, and no network is used.
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from agents.memory import OpenAIResponsesCompactionSession
from sqlalchemy import select

from agent_session_store import SessionStore

SUMMARY = [
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "sum"}]},
    {"type": "compaction", "encrypted_content": "opaque-summary"},
]


class ScriptedResponses:
    """``client.responses`` whose ``compact`` returns :data:`SUMMARY` and records the call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def compact(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return SimpleNamespace(output=[dict(item) for item in SUMMARY], usage=None)


def conversation(turns: int) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = []
    for n in range(turns):
        history.append({"role": "user", "content": f"question {n}"})
        history.append({"role": "assistant", "content": f"answer {n}"})
    return history


async def test_compaction_wrapper_replaces_our_history_in_one_transaction(db_url: str) -> None:
    async with SessionStore(db_url, archive=timedelta(days=7)) as store:
        await store.create_tables()
        session = store.session("chat")
        responses = ScriptedResponses()
        compacting = OpenAIResponsesCompactionSession(
            "chat", session, client=SimpleNamespace(responses=responses), model="gpt-4.1"
        )
        history = conversation(6)
        await compacting.add_items(history)
        await compacting.run_compaction({"force": True, "compaction_mode": "input"})

        assert len(responses.calls) == 1 and len(responses.calls[0]["input"]) == len(history)
        stored = await session.get_items()
        assert [item.get("type") for item in stored] == ["message", "compaction"]
        assert stored[1]["encrypted_content"] == "opaque-summary"
        # One replace (archived as such), never a clear followed by an add.
        a = store.archive_table
        async with store.engine.connect() as conn:
            reasons = set((await conn.execute(select(a.c.reason))).scalars())
        assert reasons == {"replace"}
        # And the archive gives the pre-compaction history back.
        assert await store.restore("chat") == len(history)
        assert await session.get_items() == history
