"""The migration commands: ``upgrade``, ``downgrade``, ``current``, ``check``.

Alembic is imported inside each command (``migrate``), after the arguments are parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any

import click

from agent_session_store._cli_base import (
    CommandError,
    Target,
    database_options,
    open_store,
    refuse_missing_file,
    run,
    table_names,
)
from agent_session_store.errors import SchemaOutOfDateError

#: The prefix of this package's revision ids (``agent_session_store_0004``).
REVISION_PREFIX = "agent_session_store_"


def revision_argument(revision: str) -> str:
    """``REVISION`` as Alembic names it: a bare number (``0004``, ``4``) is ours of that number.

    Everything else (``head``, ``base``, ``-1``, a full id, a host's revision) is passed on as
    given, for Alembic to place or refuse.
    """
    if re.fullmatch(r"\d{1,4}", revision):
        return f"{REVISION_PREFIX}{int(revision):04d}"
    return revision


def _migrate(target: Target, move: Any, revision: str) -> str | None:
    """Run ``move`` (``migrate.upgrade`` or ``migrate.downgrade``) and return the new revision."""
    from agent_session_store import migrate

    async def work() -> str | None:
        async with open_store(target) as store:
            await move(store.engine, revision, **table_names(store))
            return await migrate.current(store.engine, **table_names(store))

    return run(target, work())


@click.command("upgrade")
@database_options
@click.argument("revision", default="head")
def upgrade_command(target: Target, revision: str) -> None:
    """Migrate the schema up to REVISION (default: head)."""
    from agent_session_store import migrate

    revision = revision_argument(revision)
    click.echo(f"{target.shown_url} is at revision {_migrate(target, migrate.upgrade, revision)}")


@click.command("downgrade")
@database_options
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Needed for any step that drops tables or columns.")
def downgrade_command(target: Target, revision: str, yes: bool) -> None:
    """Migrate the schema down to REVISION (every step drops data: asks for --yes).

    REVISION: base, a relative step such as -1, or one of ours by its number (0004, or 4) or
    its full id (agent_session_store_0004); `current` prints the database's.
    """
    from agent_session_store import migrate

    revision = revision_argument(revision)

    async def work() -> str | None:
        async with open_store(target) as store:
            tables = table_names(store)
            if not yes:
                current = await migrate.current(store.engine, **tables)
                drops = _downgrade_drops(current, revision, target)
                if drops:
                    raise CommandError(
                        f"downgrade {revision} at {target.shown_url} drops, with their data: "
                        f"{'; '.join(str(d) for d in drops)}. Export what you need first, "
                        "then run again with --yes"
                    )
            await migrate.downgrade(store.engine, revision, **tables)
            return await migrate.current(store.engine, **tables)

    now = run(target, work())
    click.echo(f"{target.shown_url} is at revision {now or 'base (no tables)'}")


def _downgrade_drops(current: str | None, revision: str, target: Target) -> list[Any]:
    """What going from ``current`` down to ``revision`` drops (nothing when it cannot tell).

    A revision Alembic cannot place is left to ``migrate.downgrade``, which refuses it
    with its own error before touching anything.
    """
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError

    from agent_session_store import _migration, migrate

    if current is None:
        return []
    script = ScriptDirectory(migrate._script_location())
    try:
        steps = [rev.revision for rev in script.iterate_revisions(current, revision)]
    except RevisionError:
        return []
    return _migration.downgrade_drops(steps, target.sessions_table, target.messages_table)


@click.command("current")
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print the revisions as JSON.")
def current_command(target: Target, as_json: bool) -> None:
    """Print the database's schema revision and the one this package needs."""
    from agent_session_store import migrate

    async def work() -> tuple[str | None, list[str]]:
        async with open_store(target) as store:
            refuse_missing_file(store, target)
            revision = await migrate.current(store.engine, **table_names(store))
            return revision, await migrate.host_heads(store.engine)

    revision, host = run(target, work())
    head = migrate.head_revision()
    if as_json:
        click.echo(json.dumps({"url": target.shown_url, "current": revision, "head": head,
                               "up_to_date": revision == head, "host_alembic_version": host}))
        return
    if revision is not None:
        shown = revision
    elif host:
        # Our row is not there to find; the host's Alembic owns the tables, so our own
        # upgrade would start a second version table: point at the host's command instead.
        shown = ("none found; the host's Alembic manages this database, run there: "
                 "alembic upgrade heads")
    else:
        shown = ("none (run: agent-session-store upgrade "
                 f"--url '{target.shown_url}'{target.table_options})")
    click.echo(f"current: {shown}")
    click.echo(f"head:    {head}")
    if host:
        click.echo(f"host:    alembic_version at {', '.join(host)} (the host application's "
                   "Alembic migrates these tables)")


@click.command("check")
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def check_command(target: Target, as_json: bool) -> None:
    """Exit 0 if the schema is at the package's revision, 1 if not (saying what to run).

    Exit status 3 means the database could not be reached, so nothing was checked.
    """
    from agent_session_store import migrate

    async def work() -> str | None:
        async with open_store(target) as store:
            refuse_missing_file(store, target)
            try:
                await migrate.check(store.engine, **table_names(store))
            except SchemaOutOfDateError as exc:
                return str(exc)
        return None

    problem = run(target, work())
    head = migrate.head_revision()
    if as_json:
        click.echo(json.dumps({"url": target.shown_url, "up_to_date": problem is None,
                               "head": head, "problem": problem}))
        if problem is not None:
            raise SystemExit(1)
        return
    if problem is not None:
        raise CommandError(problem)
    click.echo(f"{target.shown_url} is up to date at revision {head}")
