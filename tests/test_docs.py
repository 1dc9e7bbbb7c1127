"""Every code block in the README and docs/ runs as written, or says plainly that it does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .docblocks import ROOT, Block, every_block

BLOCKS = every_block()
NOT_RUN = {"fragment", "output"}
#: Documents whose recipe blocks a test runs, and which test.
RECIPES = {"docs/migrations.md": "tests/test_wheel.py"}


def runs(block: Block) -> bool:
    return not (block.marks & NOT_RUN) and not block.options


@pytest.mark.sqlite
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.where)
def test_each_block_says_what_it_is(block: Block) -> None:
    assert block.language, f"{block.where}: a block needs a language (```python, ```text ...)"
    if "recipe" in block.options:
        assert str(block.path.relative_to(ROOT)) in RECIPES, f"{block.where}: no test runs it"
    elif runs(block):
        assert block.language in ("python", "bash"), (
            f"{block.where}: a {block.language} block is not run; mark it "
            f"```{block.language} fragment (or output, for what a command prints)"
        )


@pytest.mark.sqlite
@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if "file" in b.options], ids=lambda b: b.where
)
def test_a_block_that_names_a_file_is_that_file(block: Block) -> None:
    assert block.text == (ROOT / block.options["file"]).read_text("utf-8"), block.where


@pytest.mark.sqlite
@pytest.mark.parametrize("block", [b for b in BLOCKS if runs(b)], ids=lambda b: b.where)
def test_a_block_that_runs_runs_as_written(block: Block, tmp_path: Path) -> None:
    command = [sys.executable, "-"] if block.language == "python" else ["bash", "-e", "-"]
    env = {k: v for k, v in os.environ.items() if k != "AGENT_SESSION_STORE_URL"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(command, input=block.text, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{block.where}:\n{done.stdout}{done.stderr}"
