"""docs/embedding.md's example application runs as documented, on every shared database."""

from __future__ import annotations

import runpy
import subprocess
import sys
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
        "tables on the app's metadata: ['agent_messages', 'agent_messages_archive', "
        "'agent_messages_keys', 'agent_sessions', 'agent_sessions_usage', 'conversations', "
        "'users']",
        "['hello', 'echo: hello']",
        "['hi', 'echo: hi']",
        "['hello', 'echo: hello', 'how are you?', 'echo: how are you?']",
        "{'user-1': 4, 'user-2': 2}",
    ]


@pytest.mark.sqlite
def test_embedding_example_runs_twice_from_the_command_line_with_a_plain_url(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"  # no +aiosqlite: the async driver is added
    for expected_items in (4, 8):  # the second run continues the same conversations
        done = subprocess.run([sys.executable, str(EXAMPLE), "--url", url], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        counts = {"user-1": expected_items, "user-2": expected_items // 2}
        assert done.stdout.splitlines()[-1] == str(counts)
