"""``agent-session-store``: look at, move, prune and migrate conversation history from a shell.

Every command takes ``--url`` (else ``AGENT_SESSION_STORE_URL``, else the embedded SQLite file
``agent_sessions.db``). Errors a person can act on print one line and exit with status 1;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from agent_session_store import __version__, _jsonl, _render
from agent_session_store._cli_base import (
    CommandError,
    Target,
    database_options,
    open_store,
    prepare_schema,
    progress,
    require_schema,
    run,
    table_names,
)
from agent_session_store._sdk_sqlite import open_sdk_file
from agent_session_store.admin import ImportResult, PruneResult
from agent_session_store.errors import InvalidRecordError
from agent_session_store.store import SessionStore


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agent-session-store")
def cli() -> None:
    """Look at, export, import, prune and migrate agent conversation history."""


# -- reading ------------------------------------------------------------------------------


@cli.command("sessions")
@database_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--cursor", help="Continue after the page that printed this cursor.")
@click.option("--order", type=click.Choice(["newest", "oldest"]), default="newest",
              show_default=True, help="By last update.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def sessions_command(
    target: Target, limit: int, cursor: str | None, order: Any, as_json: bool
) -> None:
    """List sessions with their item counts, most recently updated first."""

    async def work() -> None:
        async with open_store(target) as store:
            await require_schema(store, target)
            page = await store.list_sessions(limit=limit, cursor=cursor, order=order)
        if as_json:
            rows = [
                {"session_id": i.session_id, "items": i.item_count,
                 "created_at": i.created_at.isoformat(), "updated_at": i.updated_at.isoformat()}
                for i in page.sessions
            ]
            click.echo(json.dumps({"sessions": rows, "next_cursor": page.next_cursor},
                                  ensure_ascii=False, indent=2))
            return
        console = Console()
        if not page.sessions:
            console.print(f"no sessions at {target.shown_url}", soft_wrap=True)
            return
        console.print(_render.sessions_table(page.sessions))
        if page.next_cursor:
            console.print(
                f"more: agent-session-store sessions --cursor {page.next_cursor}", soft_wrap=True
            )

    run(target, work())


@cli.command("show")
@database_options
@click.argument("session_id")
@click.option("--limit", type=click.IntRange(min=0), help="Only the latest N items.")
@click.option("--json", "as_json", is_flag=True, help="Print the items as a JSON array.")
def show_command(target: Target, session_id: str, limit: int | None, as_json: bool) -> None:
    """Print one session's items: user, assistant, tool calls and outputs, reasoning."""

    async def work() -> None:
        async with open_store(target) as store:
            await require_schema(store, target)
            info = await store.session_info(session_id)
            if info is None:
                raise CommandError(f"no session {session_id!r} at {target.shown_url}")
            items = await store.get_items(session_id, limit)
        if as_json:
            click.echo(json.dumps(items, ensure_ascii=False, indent=2))
            return
        console = Console()
        shown = f"latest {len(items)} of " if len(items) < info.item_count else ""
        console.print(
            f"[bold]session {info.session_id}[/bold]: {shown}{info.item_count} items, "
            f"created {_render.when(info.created_at)}, updated {_render.when(info.updated_at)} UTC",
            highlight=False, soft_wrap=True,
        )
        _render.print_items(console, items, first_number=info.item_count - len(items) + 1)

    run(target, work())


# -- moving history -----------------------------------------------------------------------


@cli.command("export")
@database_options
@click.argument("session_ids", nargs=-1)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="The .jsonl file to write ('-' for stdout).")
def export_command(target: Target, session_ids: tuple[str, ...], output: str) -> None:
    """Write sessions (all, or the IDS given) and their items to a JSON Lines file."""

    async def work() -> None:
        async with open_store(target) as store:
            await require_schema(store, target)
            for session_id in session_ids:
                if await store.session_info(session_id) is None:
                    raise CommandError(f"no session {session_id!r} at {target.shown_url}")
            total = await count_items(store, session_ids or None)
            ids = session_ids or None
            # Blocking file writes are fine: this event loop serves only this command.
            opened = (
                nullcontext(sys.stdout) if output == "-"
                else open(output, "w", encoding="utf-8")  # noqa: SIM115, ASYNC230
            )
            sessions = items = 0
            with opened as out, progress(Console(stderr=True)) as bar:
                task = bar.add_task("exporting items", total=total)
                out.write(_jsonl.dump_line(_jsonl.HEADER))
                async for record in store.export_sessions(ids):
                    out.write(_jsonl.dump_line(record))
                    if "session" in record:
                        sessions += 1
                    else:
                        items += 1
                        bar.advance(task)
        if output != "-":
            click.echo(f"exported {sessions} sessions, {items} items to {output}")

    run(target, work())


async def count_items(store: SessionStore, session_ids: tuple[str, ...] | None) -> int:
    """How many items an export of ``session_ids`` (None: all) will write."""
    m = store.messages
    stmt = select(func.count()).select_from(m)
    if session_ids:
        stmt = stmt.where(m.c.session_id.in_(session_ids))
    async with store.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


def _report(result: ImportResult) -> str:
    text = f"imported {result.created} new sessions ({result.items} items)"
    if result.replaced:
        text += f", replaced {result.replaced}"
    if result.skipped:
        text += f"; skipped {result.skipped} already present (--replace overwrites them)"
    return text


@cli.command("import")
@database_options
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Overwrite sessions that already exist.")
def import_command(target: Target, file: Path, replace: bool) -> None:
    """Load a file written by `export`; sessions already present are left alone."""

    async def work() -> ImportResult:
        async with open_store(target) as store:
            await prepare_schema(store)
            line = 0

            def seen(number: int, size: int) -> None:
                nonlocal line
                line = number
                bar.advance(task, size)

            with file.open(encoding="utf-8") as stream, progress(Console(stderr=True)) as bar:
                task = bar.add_task("importing", total=file.stat().st_size)  # noqa: ASYNC240
                records = _jsonl.read_records(stream, str(file), seen)
                try:
                    return await store.import_sessions(records, replace=replace)
                except _jsonl.InvalidExportFileError:
                    raise
                except InvalidRecordError as exc:
                    raise CommandError(f"{file}:{line}: {exc}") from None

    click.echo(_report(run(target, work())))


@cli.command("import-sdk-sqlite")
@database_options
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Overwrite sessions that already exist.")
def import_sdk_sqlite_command(target: Target, path: Path, replace: bool) -> None:
    """Copy the history in an SDK SQLiteSession file (PATH.db) into --url.

    The file is opened read-only and must use the same table names (--sessions-table,
    --messages-table; the SDK's defaults are agent_sessions and agent_messages).
    """

    async def work() -> ImportResult:
        tables = (target.sessions_table, target.messages_table)
        async with open_sdk_file(path, *tables) as source, open_store(target) as store:
            try:
                usable = await source.has_tables()
                total = await source.item_count() if usable else 0
            except DBAPIError as exc:
                raise CommandError(f"cannot read {path} as SQLite: {exc.orig}") from None
            if not usable:
                raise CommandError(
                    f"{path} has no {tables[0]!r} and {tables[1]!r} tables: not an SDK "
                    "SQLiteSession file, or it uses other table names (--sessions-table, "
                    "--messages-table)"
                )
            await prepare_schema(store)
            with progress(Console(stderr=True)) as bar:
                task = bar.add_task("copying items", total=total)

                async def counted() -> AsyncIterator[dict[str, Any]]:
                    async for record in source.export_sessions():
                        if "session" not in record:
                            bar.advance(task)
                        yield record

                return await store.import_sessions(counted(), replace=replace)

    click.echo(_report(run(target, work())))


# -- pruning ------------------------------------------------------------------------------

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` or ``45s`` as a ``timedelta``."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not an age such as 30d, 12h, 90m, 2w or 45s")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


@cli.command("prune")
@database_options
@click.option("--older-than", "age", required=True, help="Age such as 30d, 12h, 2w.",
              callback=lambda _ctx, _param, value: parse_age(value))
@click.option("--yes", is_flag=True, help="Delete; without it, only report what would go.")
def prune_command(target: Target, age: timedelta, yes: bool) -> None:
    """Delete sessions not updated for longer than --older-than (a dry run without --yes)."""
    cutoff = datetime.now(timezone.utc) - age

    async def work() -> PruneResult:
        async with open_store(target) as store:
            await require_schema(store, target)
            return await store.delete_sessions(older_than=cutoff, dry_run=not yes)

    result = run(target, work())
    since = cutoff.strftime("%Y-%m-%d %H:%M:%S UTC")
    if yes:
        click.echo(f"deleted {result.sessions} sessions ({result.items} items) "
                   f"not updated since {since}")
    else:
        click.echo(f"would delete {result.sessions} sessions ({result.items} items) not updated "
                   f"since {since}; run again with --yes to delete them")


# -- demo ---------------------------------------------------------------------------------


@cli.command("demo")
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
        console = Console()
        console.print(f"[bold]stored {len(items)} items in session {session_id!r} at "
                      f"{target.shown_url}[/bold]", highlight=False, soft_wrap=True)
        _render.print_items(console, items)
        console.print(f"see it again: agent-session-store show {session_id}", highlight=False)

    run(target, work())


# -- migrations ---------------------------------------------------------------------------


@cli.command("upgrade")
@database_options
@click.argument("revision", default="head")
def upgrade_command(target: Target, revision: str) -> None:
    """Migrate the schema up to REVISION (default: head)."""
    from agent_session_store import migrate

    async def work() -> str | None:
        async with open_store(target) as store:
            await migrate.upgrade(store.engine, revision, **table_names(store))
            return await migrate.current(store.engine, **table_names(store))

    click.echo(f"{target.shown_url} is at revision {run(target, work())}")


@cli.command("downgrade")
@database_options
@click.argument("revision")
def downgrade_command(target: Target, revision: str) -> None:
    """Migrate the schema down to REVISION ('base' removes the tables)."""
    from agent_session_store import migrate

    async def work() -> str | None:
        async with open_store(target) as store:
            await migrate.downgrade(store.engine, revision, **table_names(store))
            return await migrate.current(store.engine, **table_names(store))

    click.echo(f"{target.shown_url} is at revision {run(target, work()) or 'base (no tables)'}")


@cli.command("current")
@database_options
def current_command(target: Target) -> None:
    """Print the database's schema revision and the one this package needs."""
    from agent_session_store import migrate

    async def work() -> str | None:
        async with open_store(target) as store:
            return await migrate.current(store.engine, **table_names(store))

    revision = run(target, work())
    click.echo(f"current: {revision or 'none (run: agent-session-store upgrade)'}")
    click.echo(f"head:    {migrate.head_revision()}")


@cli.command("check")
@database_options
def check_command(target: Target) -> None:
    """Exit 0 if the schema is at the package's revision, else say what to run."""
    from agent_session_store import migrate

    async def work() -> None:
        async with open_store(target) as store:
            await migrate.check(store.engine, **table_names(store))

    run(target, work())
    click.echo(f"{target.shown_url} is up to date at revision {migrate.head_revision()}")


def main() -> None:
    """The ``agent-session-store`` console script."""
    cli(prog_name="agent-session-store")
