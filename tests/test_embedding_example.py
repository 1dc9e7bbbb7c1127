"""docs/embedding.md's example application runs as documented, on every shared database."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embedding.py"


async def test_embedding_example_keeps_each_users_history_on_the_host_base(
    shared_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    example = runpy.run_path(str(EXAMPLE), run_name="embedding_example")
    await example["main"](shared_db_url)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "tables on the app's metadata: ['agent_messages', 'agent_sessions', 'conversations', "
        "'users']",
        "['hello', 'echo: hello']",
        "['hi', 'echo: hi']",
        "['hello', 'echo: hello', 'how are you?', 'echo: how are you?']",
        "{'user-1': 4, 'user-2': 2}",
    ]
