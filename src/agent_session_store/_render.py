"""Readable terminal rendering of sessions and items, for the CLI.

Items are Responses-API input items as the Agents SDK stores them; each kind gets a label and
its text, and anything unknown is shown as compact JSON so nothing is hidden.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent_session_store.admin import SessionInfo
from agent_session_store.records import SessionRecord

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from agent_session_store._cli_base import Target


def console() -> Console:
    """A rich console on stdout; rich is imported here, when a command has output to show."""
    from rich.console import Console

    return Console()


def count(n: int, noun: str) -> str:
    """``1 session``, ``2 sessions``: a count with its noun."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def command_line(command: str, target: Target, **options: Any) -> str:
    """The ``agent-session-store`` command line that repeats ``command`` on ``target``.

    ``--url`` and the table names are included when they are not the defaults, as are the
    ``options`` given (``limit=20`` becomes ``--limit 20``); the password stays hidden.
    """
    from agent_session_store._dialect import DEFAULT_URL

    parts = ["agent-session-store", command]
    if target.url != DEFAULT_URL:
        parts.append(f"--url '{target.shown_url}'")
    parts += [f"--{name.replace('_', '-')} {value}" for name, value in options.items()]
    return " ".join(parts) + target.table_options


def when(value: datetime) -> str:
    """A UTC timestamp to the second, for tables."""
    return value.strftime("%Y-%m-%d %H:%M:%S")


def sessions_table(
    sessions: Iterable[SessionInfo | SessionRecord], title: str | None = None
) -> Table:
    """A table of sessions: id, items, created, updated."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    table.add_column("id", overflow="fold")
    table.add_column("items", justify="right")
    table.add_column("created (UTC)")
    table.add_column("updated (UTC)")
    for info in sessions:
        table.add_row(
            escape(info.session_id), str(info.item_count), when(info.created_at),
            when(info.updated_at)
        )
    return table


def _text_of(content: Any) -> str:
    """The text of a message's content: a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return json.dumps(content, ensure_ascii=False)
    parts = []
    for part in content:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif isinstance(part, dict) and isinstance(part.get("refusal"), str):
            parts.append(f"(refused) {part['refusal']}")
        else:
            kind = part.get("type", "part") if isinstance(part, dict) else type(part).__name__
            parts.append(f"[{kind}]")
    return "\n".join(parts)


def describe(item: Any) -> tuple[str, str]:
    """A label (``user``, ``assistant``, ``tool call``, ...) and the text to show for ``item``."""
    if not isinstance(item, dict):
        return "?", json.dumps(item, ensure_ascii=False)
    kind = item.get("type")
    role = item.get("role")
    if role is not None and kind in (None, "message"):
        return str(role), _text_of(item.get("content"))
    if kind in ("function_call", "custom_tool_call"):
        args = item.get("arguments", item.get("input", ""))
        return "tool call", f"{item.get('name')}({args})  [{item.get('call_id')}]"
    if kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output")
        text = output if isinstance(output, str) else _text_of(output)
        return "tool output", f"{text}  [{item.get('call_id')}]"
    if kind == "reasoning":
        summary = item.get("summary") or []
        text = _text_of(summary) if summary else "(no summary)"
        return "reasoning", text
    return str(kind or "item"), json.dumps(item, ensure_ascii=False)


_STYLES = {
    "user": "bold cyan",
    "assistant": "bold green",
    "tool call": "bold yellow",
    "tool output": "yellow",
    "reasoning": "italic magenta",
    "system": "bold red",
    "developer": "bold red",
}


def print_items(console: Console, items: Iterable[Any], first_number: int = 1) -> None:
    """Print items one per block: number, label, text."""
    from rich.markup import escape
    from rich.padding import Padding

    for number, item in enumerate(items, start=first_number):
        label, text = describe(item)
        style = _STYLES.get(label, "bold")
        console.print(f"[dim]{number:>4}[/dim] [{style}]{escape(label)}[/{style}]")
        console.print(Padding(escape(text), (0, 0, 0, 6), expand=False), highlight=False)
