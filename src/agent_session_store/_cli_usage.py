"""``agent-session-store usage``: the usage ledger's sums as a table, or as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent_session_store._cli_base import Target, database_options, open_store, require_schema, run
from agent_session_store._usage_sql import SUMMED
from agent_session_store.usage import GROUPS, UsageTotals

F = TypeVar("F", bound=Callable[..., Any])
_HEADINGS = {"day": "day (UTC)", "model": "model", "session": "session"}


def parse_when(text: str) -> datetime:
    """``2026-12-01``, ``2026-12-01T08:00`` (UTC unless an offset is given), or an age (``7d``)."""
    from agent_session_store._cli_read import parse_age  # the same ages as prune --older-than

    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return datetime.now(timezone.utc) - parse_age(text)
        except click.BadParameter:
            raise click.BadParameter(
                f"{text!r} is neither a date or time (2026-12-01, 2026-12-01T08:00, "
                "2026-12-01T08:00+02:00) nor an age such as 7d, 12h, 2w"
            ) from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


def _when_option(name: str, help_text: str) -> Callable[[F], F]:
    return click.option(
        name,
        metavar="WHEN",
        help=help_text,
        callback=lambda _ctx, _param, value: None if value is None else parse_when(value),
    )


@click.command("usage")
@database_options
@click.option("--user", "user_id", help="Only runs of this owner.")
@click.option("--session", "session_id", help="Only runs of this session.")
@_when_option("--since", "From this time on: a date, a time, or an age such as 7d.")
@_when_option("--until", "Before this time (same forms as --since).")
@click.option("--by", "group_by", type=click.Choice(GROUPS),
              help="One row per UTC day, model or session.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def usage_command(
    target: Target,
    user_id: str | None,
    session_id: str | None,
    since: datetime | None,
    until: datetime | None,
    group_by: Any,
    as_json: bool,
) -> None:
    """Sum the recorded usage (runs, requests, tokens), optionally grouped."""

    async def work() -> list[UsageTotals]:
        async with open_store(target) as store:
            await require_schema(store, target)
            return await store.usage(
                user_id=user_id, session_id=session_id, since=since, until=until,
                group_by=group_by,
            )

    rows = run(target, work())
    totals = _sum(rows) if group_by is not None else rows[0]
    if as_json:
        payload = {
            "group_by": group_by,
            "filters": {
                "user_id": user_id, "session_id": session_id,
                "since": None if since is None else since.isoformat(),
                "until": None if until is None else until.isoformat(),
            },
            "rows": [_json_row(row, group_by) for row in rows] if group_by else [],
            "totals": _json_row(totals, None),
        }
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    console = Console()
    if totals.runs == 0:
        console.print(f"no usage recorded at {target.shown_url} for these filters", soft_wrap=True)
        return
    console.print(usage_table(rows if group_by else [], totals, group_by))


def usage_table(rows: list[UsageTotals], totals: UsageTotals, group_by: str | None) -> Table:
    """A rich table: one line per group, then the totals."""
    table = Table(title="usage")
    if group_by is not None:
        table.add_column(_HEADINGS[group_by], overflow="fold")
    for heading in ("runs", *SUMMED):
        table.add_column(heading.replace("_tokens", "").replace("_", " "), justify="right")
    for row in rows:
        table.add_row(escape(_key_text(row, group_by)), *_numbers(row))
    if group_by is not None:
        table.add_section()
        table.add_row("[bold]total[/bold]", *(f"[bold]{n}[/bold]" for n in _numbers(totals)))
    else:
        table.add_row(*_numbers(totals))
    return table


def _key_text(row: UsageTotals, group_by: str | None) -> str:
    if group_by == "day":
        return "" if row.day is None else row.day.isoformat()
    if group_by == "model":
        return row.model if row.model is not None else "(none)"
    return row.session_id or ""


def _numbers(row: UsageTotals) -> list[str]:
    return [f"{row.runs:,}", *(f"{getattr(row, name):,}" for name in SUMMED)]


def _sum(rows: list[UsageTotals]) -> UsageTotals:
    sums = {name: sum(getattr(row, name) for row in rows) for name in ("runs", *SUMMED)}
    return UsageTotals(**sums)


def _json_row(row: UsageTotals, group_by: str | None) -> dict[str, Any]:
    values = row.to_dict()
    keys = {"day": "day", "model": "model", "session": "session_id"}
    wanted = keys.get(group_by or "")
    for name in keys.values():
        if name != wanted:
            del values[name]
    return values
