"""What the ratio benchmarks share: database URLs, the command line, the verdict.

A ratio benchmark (``benchmarks.ownership``, ``benchmarks.idempotency``) times two variants of
one operation in interleaved rounds on each database and prints their ratio; ``main`` runs it
on the databases asked for and exits 1 when a full run misses the target.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from agent_session_store import SessionStore

#: Where the server URLs come from, as for the test suite.
URL_ENVS = {
    "postgresql": "AGENT_SESSION_STORE_TEST_POSTGRES_URL",
    "mariadb": "AGENT_SESSION_STORE_TEST_MARIADB_URL",
}

Bench = Callable[[str, str, int, int], Awaitable[float]]
#: Extra work a benchmark offers behind a flag of its own: ``(db, url)``, run before ``bench``.
Extra = Callable[[str, str], Awaitable[None]]


@asynccontextmanager
async def fresh_tables(store: SessionStore) -> AsyncIterator[SessionStore]:
    """``store``'s tables made anew for a run and dropped after it: each run starts empty."""
    async with store.engine.begin() as conn:
        await conn.run_sync(store.metadata.drop_all)
    await store.create_tables()
    try:
        yield store
    finally:
        async with store.engine.begin() as conn:
            await conn.run_sync(store.metadata.drop_all)


def entry(doc: str, **options: Any) -> Callable[[list[str] | None], Awaitable[int]]:
    """A benchmark module's ``main``: :func:`main` with its options, described by ``doc``."""

    async def run(argv: list[str] | None = None) -> int:
        return await main(argv, description=doc.splitlines()[0], **options)

    return run


async def main(
    argv: list[str] | None,
    *,
    description: str,
    bench: Bench,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    target: float,
    ratio_name: str,
    extras: dict[str, tuple[str, Extra]] | None = None,
) -> int:
    """Run ``bench(db, url, rounds, size)`` per database; 1 if a full run misses ``target``.

    ``sizes``: (rounds, size) for a full run, then for ``--smoke``. ``extras``: flag name ->
    (help, coroutine); each flag given runs its coroutine on a database before ``bench``, so a
    benchmark with a side measurement (``ownership --trips``) needs no command line of its own.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--db", default="sqlite", help="sqlite,postgresql,mariadb")
    parser.add_argument("--smoke", action="store_true", help="a few short rounds")
    for flag, (help_text, _) in (extras or {}).items():
        parser.add_argument(f"--{flag}", action="store_true", help=help_text)
    args = parser.parse_args(argv)
    wanted = [extra for flag, (_, extra) in (extras or {}).items() if getattr(args, flag)]
    rounds, size = sizes[1] if args.smoke else sizes[0]
    misses = []
    with tempfile.TemporaryDirectory() as tmp:
        for db in args.db.split(","):
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}" if db == "sqlite" else ""
            url = url or os.environ.get(URL_ENVS.get(db, ""), "")
            if not url:
                print(f"{db}: set {URL_ENVS.get(db, 'a URL')}", file=sys.stderr)
                return 2
            for extra in wanted:
                await extra(db, url)
            if await bench(db, url, rounds, size) < target:
                misses.append(db)
    if misses and not args.smoke:
        print(f"missed ({ratio_name} >= {target}): {', '.join(misses)}")
        return 1
    return 0
