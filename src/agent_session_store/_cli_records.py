"""The CLI's parts for session records: listing filters, the record line, expiry and erasure.

``sessions`` takes :func:`listing_options`, ``show`` prints :func:`record_line`, ``prune
--expired`` runs :func:`prune_expired`, and ``erase-user`` is :data:`erase_user_command`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from agent_session_store._cli_base import Target, database_options, open_store, require_schema, run
from agent_session_store._render import count
from agent_session_store.records import Removed, SessionRecord

F = TypeVar("F", bound=Callable[..., Any])


def parse_meta(values: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs as a metadata filter.

    A value reads as JSON when it is a JSON scalar (``n=3``, ``vip=true``), else as text
    (``team=red``); quote a number to make it text: ``n='"3"'``.
    """
    wanted: dict[str, Any] = {}
    for pair in values:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--meta")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        wanted[key] = value if isinstance(value, (str, int, float, bool)) else text
    return wanted


def listing_options(command: F) -> F:
    """``--user``, ``--meta key=value`` (repeatable) and ``--expired`` for ``sessions``."""
    command = click.option(
        "--expired", "include_expired", is_flag=True, help="Also list expired sessions."
    )(command)
    command = click.option(
        "--meta",
        "meta",
        multiple=True,
        metavar="KEY=VALUE",
        help="Only sessions whose metadata has KEY set to VALUE (repeatable).",
    )(command)
    return click.option("--user", "user_id", help="Only this owner's sessions.")(command)


def listing_filters(user_id: str | None, meta: tuple[str, ...], include_expired: bool) -> Any:
    """The ``list_sessions`` keyword arguments for the ``sessions`` options."""
    return {"user_id": user_id, "metadata": parse_meta(meta), "include_expired": include_expired}


def record_json(record: SessionRecord) -> dict[str, Any]:
    """The record fields ``sessions --json`` adds to each row."""
    expires = record.expires_at
    return {
        "user_id": record.user_id,
        "title": record.title,
        "metadata": record.metadata,
        "expires_at": None if expires is None else expires.isoformat(),
    }


def record_line(record: SessionRecord | None) -> str:
    """``show``'s second line: title, owner, expiry and metadata, or "" when there are none."""
    if record is None:
        return ""
    parts = []
    if record.title is not None:
        parts.append(f"title: {record.title}")
    parts.append(f"owner: {record.user_id if record.user_id is not None else '(none)'}")
    if record.expires_at is not None:
        parts.append(f"expires: {record.expires_at.strftime('%Y-%m-%d %H:%M:%S')} UTC")
    if record.metadata:
        parts.append("metadata: " + json.dumps(record.metadata, ensure_ascii=False))
    if record.forked_from is not None:
        source, item = record.forked_from
        parts.append(f"forked from: {source}" + ("" if item is None else f" at item {item}"))
    return "; ".join(parts)


def prune_expired(target: Target, yes: bool, batch_size: int, as_json: bool = False) -> None:
    """``prune --expired``: delete (with ``--yes``) or count every expired session."""

    async def work() -> Removed:
        async with open_store(target) as store:
            await require_schema(store, target)
            return await store.purge_expired(batch_size=batch_size, dry_run=not yes)

    result = run(target, work())
    if as_json:
        payload = {"deleted": yes, "expired": True, "sessions": result.sessions}
        click.echo(json.dumps({**payload, "items": result.items}))
        return
    counts = f"{count(result.sessions, 'expired session')} ({count(result.items, 'item')})"
    if yes:
        click.echo(f"deleted {counts}")
    else:
        click.echo(f"would delete {counts}; run again with --yes to delete them")


@click.command("erase-user")
@database_options
@click.argument("user_id")
@click.option("--yes", is_flag=True, help="Erase; without it, only report what would go.")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(min=1))
def erase_user_command(target: Target, user_id: str, yes: bool, batch_size: int) -> None:
    """Delete every session and item of USER_ID (a dry run without --yes)."""

    async def work() -> Removed:
        async with open_store(target) as store:
            await require_schema(store, target)
            return await store.erase_user(user_id, batch_size=batch_size, dry_run=not yes)

    result = run(target, work())
    if yes:
        counts = f"{count(result.sessions, 'session')} ({count(result.items, 'item')})"
        click.echo(f"erased {counts} of {user_id!r}")
    else:
        click.echo(
            f"would erase {count(result.sessions, 'session')} ({count(result.items, 'item')}) "
            f"of {user_id!r}; "
            "run again with --yes to erase them"
        )


@click.command("restore")
@database_options
@click.argument("session_id")
@click.option("--user-id", default=None, help="Act for this owner (refused for another's).")
def restore_command(target: Target, session_id: str, user_id: str | None) -> None:
    """Undo the newest archived clear, replace, rewind or pop of SESSION_ID.

    The session becomes what it was just before that operation; items written since go to
    the archive. Needs a store that archived (SessionStore(..., archive=True)).
    """

    async def work() -> int:
        async with open_store(target) as store:
            await require_schema(store, target)
            return await store.restore(session_id, user_id=user_id)

    restored = run(target, work())
    if restored:
        click.echo(f"restored {count(restored, 'item')} of session {session_id!r}")
    else:
        click.echo(f"nothing archived for session {session_id!r}; nothing changed")
