"""The quickstart example stores a three-turn conversation and prints it back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


@pytest.mark.sqlite
def test_quickstart_stores_and_prints_a_three_turn_conversation(tmp_path: Path) -> None:
    pytest.importorskip("agents")
    for _ in range(2):  # a second run starts the conversation afresh, not appended
        done = subprocess.run(
            [sys.executable, str(QUICKSTART)], cwd=tmp_path, capture_output=True, text=True,
            timeout=120, check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "8 items stored in session 'quickstart'" in done.stdout
        assert done.stdout.count("user> ") == 3
    assert (tmp_path / "agent_sessions.db").exists()
