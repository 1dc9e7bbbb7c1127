"""The fenced code blocks of the README and docs/, with what their info string asks for.

The first word of the info string is the language; the words after it say how the test suite
treats the block (``tests/test_docs.py``):

- ``fragment``: needs context from around it (an engine, an ``await``, a server); not run.
- ``output``: what a command prints; not run.
- ``file=PATH``: the block is PATH (relative to the repository), verbatim.
- ``recipe=NAME``: a step of a recipe that a named test runs in order (docs/migrations.md's
  host recipe: tests/test_wheel.py).
- nothing: ``python`` blocks are run as scripts in an empty folder, ``bash`` blocks with
  ``bash -e`` there; any other language must say ``fragment`` or ``output``.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its marks and its text."""

    path: Path
    line: int
    language: str
    marks: frozenset[str] = field(default_factory=frozenset)
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, its text dedented by the fence's indentation."""
    found: list[Block] = []
    lines = path.read_text("utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        words = opening["info"].split()
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        index += 1  # the closing fence
        text = textwrap.dedent("\n".join(body)) + "\n"
        options = dict(word.split("=", 1) for word in words[1:] if "=" in word)
        marks = frozenset(word for word in words[1:] if "=" not in word)
        found.append(Block(path, index - len(body) - 1, words[0] if words else "", marks,
                           options, text))
    return found


def every_block() -> list[Block]:
    """The blocks of the README and of every page in docs/."""
    return [block for path in DOCUMENTS for block in blocks(path)]


def recipe(path: Path) -> dict[str, Block]:
    """The ``recipe=NAME`` blocks of ``path`` by name."""
    return {b.options["recipe"]: b for b in blocks(path) if "recipe" in b.options}
