"""The commands that read and prune: ``sessions``, ``show``, ``prune``, ``demo``.

Imported by :mod:`agent_session_store.cli` only when one of them runs.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from agent_session_store import _render
from agent_session_store._cli_base import (
    CommandError,
    Target,
    database_options,
    open_store,
    prepare_schema,
    require_schema,
    run,
)
from agent_session_store._cli_records import (
    listing_filters,
    listing_options,
    prune_expired,
    record_json,
    record_line,
)
from agent_session_store.admin import PruneResult


@click.command("sessions")
@database_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--cursor", help="Continue after the page that printed this cursor.")
@click.option("--order", type=click.Choice(["newest", "oldest"]), default="newest",
              show_default=True, help="By last update.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@listing_options
def sessions_command(
    target: Target, limit: int, cursor: str | None, order: Any, as_json: bool, **filters: Any
) -> None:
    """List sessions with their item counts, most recently updated first."""

    async def work() -> None:
        async with open_store(target) as store:
            await require_schema(store, target)
            page = await store.list_sessions(
                limit=limit, cursor=cursor, order=order, **listing_filters(**filters)
            )
        if as_json:
            rows = [
                {"session_id": i.session_id, "items": i.item_count,
                 "created_at": i.created_at.isoformat(), "updated_at": i.updated_at.isoformat(),
                 **record_json(i)}
                for i in page.sessions
            ]
            click.echo(json.dumps({"sessions": rows, "next_cursor": page.next_cursor},
                                  ensure_ascii=False, indent=2))
            return
        if not page.sessions:
            click.echo(f"no sessions at {target.shown_url}")
            return
        console = _render.console()
        console.print(_render.sessions_table(page.sessions))
        if page.next_cursor:
            extra = {"order": order} if order != "newest" else {}
            again = _render.command_line("sessions", target, limit=limit, **extra)
            console.print(f"more: {again} --cursor {page.next_cursor}", soft_wrap=True)

    run(target, work())


@click.command("show")
@database_options
@click.argument("session_id")
@click.option("--limit", type=click.IntRange(min=0), help="Only the latest N items.")
@click.option("--json", "as_json", is_flag=True, help="Print the items as a JSON array.")
def show_command(target: Target, session_id: str, limit: int | None, as_json: bool) -> None:
    """Print one session's items: user, assistant, tool calls and outputs, reasoning."""

    async def work() -> None:
        async with open_store(target) as store:
            await require_schema(store, target)
            info = await store.info(session_id)
            if info is None:
                raise CommandError(f"no session {session_id!r} at {target.shown_url}")
            items = await store.get_items(session_id, limit)
        if as_json:
            click.echo(json.dumps(items, ensure_ascii=False, indent=2))
            return
        console = _render.console()
        shown = f"latest {len(items)} of " if len(items) < info.item_count else ""
        console.print(
            f"[bold]session {info.session_id}[/bold]: {shown}{info.item_count} items, "
            f"created {_render.when(info.created_at)}, updated {_render.when(info.updated_at)} UTC",
            highlight=False, soft_wrap=True,
        )
        console.print(record_line(info), highlight=False, soft_wrap=True, markup=False)
        _render.print_items(console, items, first_number=info.item_count - len(items) + 1)

    run(target, work())


# -- pruning ------------------------------------------------------------------------------

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` or ``45s`` as a ``timedelta``."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not an age such as 30d, 12h, 90m, 2w or 45s")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


@click.command("prune")
@database_options
@click.option("--older-than", "age", help="Age such as 30d, 12h, 2w.",
              callback=lambda _ctx, _param, value: None if value is None else parse_age(value))
@click.option("--expired", is_flag=True, help="Delete expired sessions instead.")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--yes", is_flag=True, help="Delete; without it, only report what would go.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def prune_command(
    target: Target,
    age: timedelta | None,
    expired: bool,
    batch_size: int,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete sessions not updated for --older-than, or --expired ones (dry run without --yes)."""
    if expired == (age is not None):
        raise click.UsageError("give exactly one of --older-than AGE and --expired")
    if age is None:
        prune_expired(target, yes, batch_size, as_json)
        return
    cutoff = datetime.now(timezone.utc) - age

    async def work() -> PruneResult:
        async with open_store(target) as store:
            await require_schema(store, target)
            return await store.delete_sessions(older_than=cutoff, dry_run=not yes)

    result = run(target, work())
    if as_json:
        click.echo(json.dumps({"deleted": yes, "sessions": result.sessions,
                               "items": result.items, "not_updated_since": cutoff.isoformat()}))
        return
    since = cutoff.strftime("%Y-%m-%d %H:%M:%S UTC")
    counts = f"{_render.count(result.sessions, 'session')} ({_render.count(result.items, 'item')})"
    if yes:
        click.echo(f"deleted {counts} not updated since {since}")
    else:
        click.echo(f"would delete {counts} not updated since {since}; "
                   "run again with --yes to delete them")


# -- demo ---------------------------------------------------------------------------------


@click.command("demo")
@database_options
@click.option("--session-id", default="demo", show_default=True)
def demo_command(target: Target, session_id: str) -> None:
    """Play a scripted agent conversation through the SDK Runner (offline), then show it."""
    try:
        from agent_session_store._demo import run_demo
    except ImportError:
        if target.debug:
            raise
        raise CommandError(
            "the demo runs the OpenAI Agents SDK, which is not installed; "
            'run: pip install "agent-session-store[agents]"'
        ) from None

    async def work() -> None:
        async with open_store(target) as store:
            await prepare_schema(store)
            session = store.session(session_id)
            await session.clear_session()  # a re-run shows one conversation, not two
            await run_demo(session)
            items = await session.get_items()
        console = _render.console()
        console.print(f"[bold]stored {len(items)} items in session {session_id!r} at "
                      f"{target.shown_url}[/bold]", highlight=False, soft_wrap=True)
        _render.print_items(console, items)
        console.print(f"see it again: agent-session-store show {session_id}", highlight=False)

    run(target, work())
