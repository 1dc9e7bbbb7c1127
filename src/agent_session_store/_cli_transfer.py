"""The commands that move history: ``export``, ``import`` and ``import-sdk-sqlite``.

Registered on the ``agent-session-store`` group by :mod:`agent_session_store.cli`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from agent_session_store import _jsonl
from agent_session_store._cli_base import (
    CommandError,
    Target,
    database_options,
    open_store,
    prepare_schema,
    progress,
    require_schema,
    run,
)
from agent_session_store._sdk_sqlite import open_sdk_file
from agent_session_store.admin import ImportResult
from agent_session_store.errors import InvalidRecordError
from agent_session_store.store import SessionStore


@click.command("export")
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
            # Written under a temporary name and renamed at the end, so a failed export never
            # leaves a truncated file that looks complete. Blocking writes are fine: this
            # event loop serves only this command.
            partial = f"{output}.partial"
            opened = (
                nullcontext(sys.stdout) if output == "-"
                else open(partial, "w", encoding="utf-8")  # noqa: SIM115, ASYNC230
            )
            sessions = items = 0
            try:
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
            except BaseException:
                if output != "-":
                    Path(partial).unlink(missing_ok=True)  # noqa: ASYNC240
                raise
        if output != "-":
            os.replace(partial, output)
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


@click.command("import")
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


@click.command("import-sdk-sqlite")
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
