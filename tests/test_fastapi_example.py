"""examples/fastapi_app.py serves each user's history, driven through httpx with its lifespan."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import httpx
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fastapi_app.py"


def load_example() -> dict[str, Any]:
    return runpy.run_path(str(EXAMPLE), run_name="fastapi_example")


@pytest.mark.sqlite
def test_fastapi_example_puts_our_tables_on_its_base_at_import() -> None:
    # Alembic autogenerate imports the models and never runs the lifespan.
    tables = load_example()["Base"].metadata.tables
    assert {"agent_sessions", "agent_messages", "conversations"} <= set(tables)


async def test_fastapi_example_keeps_each_users_history_across_requests(
    shared_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", shared_db_url)
    app = load_example()["app"]
    # httpx's ASGITransport does not run the lifespan; without this, app.state has no store.
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app"
    ) as client:
        first = await client.post("/users/1/chat", json={"text": "hello"})
        assert first.status_code == 200, first.text
        assert first.json() == {"reply": "echo: hello", "items": 2}
        await client.post("/users/2/chat", json={"text": "hi"})
        again = await client.post("/users/1/chat", json={"text": "ça va? 🙂"})
        assert again.json()["items"] == 4
        history = (await client.get("/users/1/history")).json()
        assert [item["content"] for item in history] == [
            "hello", "echo: hello", "ça va? 🙂", "echo: ça va? 🙂"
        ]
        assert len((await client.get("/users/2/history")).json()) == 2
