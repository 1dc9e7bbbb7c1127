"""The commands that move history: ``export``, ``import`` and ``import-sdk-sqlite``.

Registered on the ``agent-session-store`` group by :mod:`agent_session_store.cli`.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import click
from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from agent_session_store import _jsonl, _render
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

Record = dict[str, Any]
#: Exit status when the reader of ``export -o -`` went away (as for a shell tool on SIGPIPE).
EXIT_READER_GONE = 141


@click.command("export")
@database_options
@click.argument("session_ids", nargs=-1)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="The .jsonl file to write ('-' for stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON (with -o FILE).")
def export_command(
    target: Target, session_ids: tuple[str, ...], output: str, as_json: bool
) -> None:
    """Write sessions (all, or the IDS given) and their items to a JSON Lines file."""
    if output == "-" and as_json:
        raise click.UsageError("--json prints to stdout, which -o - already fills; use -o FILE")
    folder = Path(output).parent
    if output != "-" and not folder.is_dir():
        raise CommandError(f"cannot write {output}: there is no directory {str(folder)!r}")

    async def work() -> tuple[int, int]:
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
                    # Closed here, not by the event loop's shutdown, when the reader goes away.
                    # (export_sessions is an async generator, typed as the iterator it returns.)
                    exported = cast(AsyncGenerator[Record, None], store.export_sessions(ids))
                    async with aclosing(exported) as records:
                        async for record in records:
                            out.write(_jsonl.dump_line(record))
                            if "session" in record:
                                sessions += 1
                            else:
                                items += 1
                                bar.advance(task)
                    out.flush()
            except BrokenPipeError:
                # The reader of -o - went away (| head). Python would also report the unflushed
                # rest of stdout at exit: point stdout at devnull, and stop quietly.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise click.exceptions.Exit(EXIT_READER_GONE) from None
            except BaseException:
                if output != "-":
                    Path(partial).unlink(missing_ok=True)  # noqa: ASYNC240
                raise
        if output != "-":
            os.replace(partial, output)
        return sessions, items

    sessions, items = run(target, work())
    if as_json:
        click.echo(json.dumps({"sessions": sessions, "items": items, "output": output}))
    elif output != "-":
        click.echo(f"exported {_render.count(sessions, 'session')}, "
                   f"{_render.count(items, 'item')} to {output}")


async def count_items(store: SessionStore, session_ids: tuple[str, ...] | None) -> int:
    """How many items an export of ``session_ids`` (None: all) will write."""
    m = store.messages
    stmt = select(func.count()).select_from(m)
    if session_ids:
        stmt = stmt.where(m.c.session_id.in_(session_ids))
    async with store.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


def _report(result: ImportResult) -> str:
    text = (f"imported {_render.count(result.created, 'new session')} "
            f"({_render.count(result.items, 'item')})")
    if result.replaced:
        text += f", replaced {result.replaced}"
    if result.skipped:
        text += f"; skipped {result.skipped} already present (--replace overwrites them)"
    return text


def _echo_result(result: ImportResult, as_json: bool) -> None:
    click.echo(json.dumps(asdict(result)) if as_json else _report(result))


def _sessions(records: Iterator[dict[str, Any]]) -> Iterator[Iterator[dict[str, Any]]]:
    """The records split at each session header, read as they come (never held at once)."""
    headers = 0

    def key(record: dict[str, Any]) -> int:
        nonlocal headers
        headers += "session" in record
        return headers

    return (group for _, group in itertools.groupby(records, key))


async def import_each(
    store: SessionStore, records: Iterator[dict[str, Any]], replace: bool, done: ImportResult
) -> None:
    """Import session by session, adding each committed one's counts to ``done``.

    Each session is its own transaction, so when the import stops, ``done`` says exactly how
    much is in the database.
    """
    for group in _sessions(records):
        result = await store.import_sessions(group, replace=replace)
        for name in ("created", "replaced", "skipped", "items"):
            setattr(done, name, getattr(done, name) + getattr(result, name))


@click.command("import")
@database_options
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--replace", is_flag=True, help="Overwrite sessions that already exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def import_command(target: Target, file: str, replace: bool, as_json: bool) -> None:
    """Load a file written by `export` ('-' reads stdin); sessions present are left alone."""
    name = "<stdin>" if file == "-" else file
    done = ImportResult()
    line = 0

    async def work() -> None:
        async with open_store(target) as store:
            await prepare_schema(store)

            def seen(number: int, size: int) -> None:
                nonlocal line
                line = number
                bar.advance(task, size)

            opened = (
                nullcontext(sys.stdin) if file == "-"
                else open(file, encoding="utf-8")  # noqa: SIM115, ASYNC230
            )
            size = None if file == "-" else Path(file).stat().st_size  # noqa: ASYNC240
            with opened as stream, progress(Console(stderr=True), in_bytes=True) as bar:
                task = bar.add_task("importing", total=size)
                records = _jsonl.read_records(stream, name, seen)
                try:
                    await import_each(store, records, replace, done)
                except _jsonl.InvalidExportFileError:
                    raise
                except InvalidRecordError as exc:
                    raise CommandError(f"{name}:{line}: {exc}") from None

    try:
        run(target, work())
    except CommandError as exc:
        if not (done.created or done.replaced or done.skipped):
            raise
        raise type(exc)(
            f"{exc.message} ({_report(done)} before it, committed; run again to import the "
            "rest: sessions already there are skipped)"
        ) from None
    _echo_result(done, as_json)


@click.command("import-sdk-sqlite")
@database_options
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Overwrite sessions that already exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def import_sdk_sqlite_command(target: Target, path: Path, replace: bool, as_json: bool) -> None:
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

    _echo_result(run(target, work()), as_json)
